"""benchmarks/test_set_evidence.py at a toy size: one entry per K, ratios of ours to plain."""

import importlib.util
import json
from pathlib import Path

BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "test_set_evidence.py"


def test_a_small_run_writes_a_ratio_per_k(tmp_path):
    spec = importlib.util.spec_from_file_location("test_set_evidence", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(module.parse_args(["--images", "20", "--batch-size", "8", "--hidden", "8",
                                   "--latent-dim", "2", "--repeats", "2", "--k", "1", "4",
                                   "--threads", "1", "--out-dir", str(tmp_path)]))
    result = json.loads((tmp_path / "test_set_evidence.json").read_text())
    assert set(result["per_k"]) == {"1", "4"}
    for entry in result["per_k"].values():
        assert entry["median_ratio_ours_to_plain"] > 0
        assert len(entry["seconds"]["ours"]) == len(entry["seconds"]["plain"]) == 2
