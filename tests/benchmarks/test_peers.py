"""benchmarks/peers.py --quick: runs with the peers present or absent and writes the schema."""

import importlib.util
import json
from pathlib import Path

import pytest

BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "peers.py"


def load_peers():
    spec = importlib.util.spec_from_file_location("peers", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_quick(tmp_path, sides):
    peers = load_peers()
    out = tmp_path / "peers.json"
    peers.main(peers.parse_args(["--quick", "--data", "random", "--out-dir", str(tmp_path),
                                 "--sides", *sides]))
    return peers, json.loads(out.read_text())


def check_schema(peers, result):
    assert result["threads"] == 1
    assert "intra_op_parallelism_threads=1" in result["xla_flags"]
    for objective in peers.OBJECTIVES:
        entry = result[objective]
        assert set(entry["ratios"]) == set(peers.SIDES)
        assert entry["ratios"]["hand_eager"] == 1.0
        assert entry["ratios"]["ours"] > 0
        assert entry["threads"] == 1 and len(entry["load_average"]) == 6
        for side, ratio in entry["ratios"].items():
            # every side has a positive ratio or a stated reason for its absence
            assert (ratio is not None and ratio > 0) or side in entry["skipped"], (objective, side)
    assert result["evidence"]["unit"] == "seconds per image"


def test_quick_run_writes_one_entry_per_objective(tmp_path):
    # the torch sides only (the peers' imports and XLA compilations take most of a run);
    # the peers are then recorded as skipped, with the reason
    peers, result = run_quick(tmp_path, ["hand_eager", "ours"])
    check_schema(peers, result)
    assert result["iwae"]["skipped"]["numpyro"] == "not requested (--sides)"


@pytest.mark.slow
def test_quick_run_with_the_peers_present_or_absent(tmp_path):
    # NumPyro and pythae run when installed (pip install -e '.[peers]'), and are recorded as
    # skipped with the reason when not; about 40 s of CPU with both present (JAX compiles)
    peers, result = run_quick(tmp_path, ["hand_eager", "ours", "numpyro", "pythae"])
    check_schema(peers, result)
    for peer, module in (("numpyro", "numpyro"), ("pythae", "pythae")):
        present = importlib.util.find_spec(module) is not None
        assert (result["elbo" if peer == "numpyro" else "meanfield"]["ratios"][peer]
                is not None) == present
