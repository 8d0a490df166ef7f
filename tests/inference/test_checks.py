"""Shared argument checks (inference/checks.py): what each accepts, converts and refuses."""

import numpy as np
import pytest
import torch

import inference.checks
from inference.checks import (
    as_int,
    as_int_list,
    check_data_arguments,
    check_weights_memory,
    physical_memory_bytes,
)


def test_as_int_converts_numpy_integers_and_refuses_bools_and_floats():
    value = as_int(np.int64(5), "n")
    assert value == 5 and type(value) is int
    assert as_int(np.uint8(0), "n", minimum=0) == 0
    for bad in (True, np.bool_(True), 5.0, np.float32(5.0), "5", 0, np.int64(-1)):
        with pytest.raises(ValueError, match="n must be a positive integer"):
            as_int(bad, "n")


def test_as_int_list_reads_any_iterable_once():
    for values in ([3, 1], (3, 1), range(3, 0, -2), np.array([3, 1]), torch.tensor([3, 1]),
                   (k for k in (3, 1)), [np.int32(3), 1]):
        result = as_int_list(values, "ks")
        assert result == [3, 1] and all(type(v) is int for v in result)
    for bad, match in ((3, "non-empty sequence"), ("31", "non-empty sequence"),
                       (iter(()), "an empty one"), ([3, True], r"ks\[1\]"),
                       (np.array([3.0]), r"ks\[0\] must be a positive integer, got 3.0"),
                       (np.int64(3), "1-D sequence"), (torch.ones(1, 2, dtype=int), "1-D")):
        with pytest.raises(ValueError, match=match):
            as_int_list(bad, "ks")


def test_check_data_arguments():
    x = torch.zeros(3)
    # numbers, strings and None beside tensor data; tensors inside containers; no arguments
    for args, kwargs in (((x, 2.0, "mode", None), {}), (([x, x], "mode"), {}),
                         (("mode",), {"batch": {"x": x}}), ((), {}), ((4, None), {})):
        check_data_arguments(args, kwargs)
    for args, kwargs, match in (
            (([1.0, 2.0],), {}, "argument 0 is a list and no argument is a tensor"),
            ((2, (1.0,)), {}, "argument 1 is a tuple"),
            ((), {"x": "abc"}, "keyword argument 'x' is a str")):
        with pytest.raises(TypeError, match=match):
            check_data_arguments(args, kwargs)


def test_check_weights_memory(monkeypatch):
    total = physical_memory_bytes()
    assert total is None or total > 2 ** 20
    monkeypatch.setattr(inference.checks, "physical_memory_bytes", lambda: 800)
    check_weights_memory(100, 2, 4)  # exactly 800 bytes
    with pytest.raises(ValueError, match="num_samples=100 particles for 2 datapoints.* need "
                                         "1,600 bytes .*8 bytes each"):
        check_weights_memory(100, 2, 8)
    monkeypatch.setattr(inference.checks, "physical_memory_bytes", lambda: None)
    check_weights_memory(10 ** 15, 10 ** 6, 8)  # not reported: not checked
