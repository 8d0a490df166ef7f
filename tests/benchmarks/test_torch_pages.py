"""benchmarks/torch_pages.py --quick: both kinds of child run and every kernel is written."""

import importlib.util
import json
from pathlib import Path

import pytest

BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "torch_pages.py"


def test_quick_run_writes_every_kernel(tmp_path):
    spec = importlib.util.spec_from_file_location("torch_pages_benchmark", BENCHMARK)
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    benchmark.main(benchmark.parse_args(["--quick", "--out-dir", str(tmp_path)]))
    result = json.loads((tmp_path / "torch_pages.json").read_text())
    assert set(result["kernels"]) == set(benchmark.KERNELS)
    for entry in result["kernels"].values():
        assert entry["fresh"] > 0 and entry["mapped"] > 0
        # the ratio is written to two decimals, from the medians before their rounding
        assert entry["ratio"] == pytest.approx(entry["fresh"] / entry["mapped"], rel=0.01,
                                               abs=0.006)
    assert (tmp_path / "torch_pages.png").exists()
