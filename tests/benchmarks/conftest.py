"""The benchmarks run in the test process: give back the cores, threads and XLA flags they
set (``os.sched_setaffinity``, ``torch.set_num_threads``, ``XLA_FLAGS``) after each test."""

import os

import pytest
import torch


@pytest.fixture(autouse=True)
def restore_process_settings(monkeypatch):
    cores = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    threads = torch.get_num_threads()
    monkeypatch.setenv("XLA_FLAGS", os.environ.get("XLA_FLAGS", ""))
    yield
    if cores is not None:
        os.sched_setaffinity(0, cores)
    torch.set_num_threads(threads)
