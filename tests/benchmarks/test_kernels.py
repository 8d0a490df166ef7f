"""benchmarks/kernels.py --quick: writes every kernel's times, with JAX present or absent."""

import importlib.util
import json
from pathlib import Path

BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "kernels.py"


def test_quick_run_writes_every_kernel(tmp_path):
    spec = importlib.util.spec_from_file_location("kernels", BENCHMARK)
    kernels = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(kernels)
    kernels.main(kernels.parse_args(["--quick", "--out-dir", str(tmp_path)]))
    result = json.loads((tmp_path / "kernels.json").read_text())
    names = {f"matmul {layer} {kind}" for layer, kind in kernels.PRODUCTS}
    names |= {f"elementwise {name}" for name in kernels.ELEMENTWISE}
    assert set(result["kernels"]) == names and len(kernels.PRODUCTS) == 11
    jax_present = importlib.util.find_spec("jax") is not None
    assert (result["jax_skipped"] is None) == jax_present
    for entry in result["kernels"].values():
        assert entry["torch"] > 0
        assert ("ratio" in entry) == jax_present
    assert (tmp_path / "kernels.png").exists() == jax_present
    assert result["threads"] == 1 and "intra_op_parallelism_threads=1" in result["xla_flags"]
