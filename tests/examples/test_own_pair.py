"""examples/own_pair.py: a user's factor-analysis pair gets every estimator, checked exactly."""

import json
import runpy
import sys
from pathlib import Path

import pytest
import torch

from inference.evidence.estimators import iwae_bound

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "own_pair.py"


def test_own_pair_example_runs(tmp_path, monkeypatch):
    argv = [str(EXAMPLE), "--num-train", "300", "--num-test", "30", "--epochs", "5",
            "--max-k", "100", "--repeats", "2", "--ais-chains", "4", "--ais-steps", "20",
            "--gap-steps", "50", "--out-dir", str(tmp_path)]
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path(str(EXAMPLE), run_name="__main__")
    m = json.loads((tmp_path / "metrics.json").read_text())
    exact = m["exact_log_evidence"]
    iwae = {int(k): v for k, v in m["iwae"].items()}
    stderr = {r["num_samples"]: r["stderr"] for r in m["bounds"] if r["bound"] == "iwae"}
    # lower bounds in expectation: 4 standard errors over the 2 repeats plus 0.02 nats for
    # the spread of 30 test points that the repeats do not see
    assert m["elbo"] <= iwae[10] + 4 * stderr[10] + 0.02
    assert iwae[100] <= exact + 4 * stderr[100] + 0.02
    # a Gaussian posterior and a near-Gaussian guide: IWAE_100 is within 0.1 nats of log p(x)
    assert iwae[100] == pytest.approx(exact, abs=0.1)
    assert m["ais"] == pytest.approx(exact, abs=0.1 + 4 * m["ais_stderr"])
    assert m["amortization_gap"] > -0.05
    assert len(m["k_hat"]) == 30
    assert (tmp_path / "bounds_vs_k.png").stat().st_size > 1000


def test_a_max_k_off_the_grid_is_evaluated_and_gives_k_hat(tmp_path):
    # --max-k 21..99 passed the parser, but k-hat took the largest grid K below it, 10, and
    # failed after training and AIS ("pareto_k needs at least 21 weights")
    example = runpy.run_path(str(EXAMPLE))
    assert example["evaluation_ks"](21) == [1, 10, 21]
    assert example["evaluation_ks"](1000) == [1, 10, 100, 1000]
    assert example["evaluation_ks"](5000) == [1, 10, 100, 1000, 5000]
    threads = torch.get_num_threads()
    try:
        m = example["main"](example["parse_args"]([
            "--num-train", "50", "--num-test", "5", "--epochs", "1", "--max-k", "21",
            "--repeats", "1", "--ais-chains", "2", "--ais-steps", "2", "--gap-steps", "2",
            "--threads", "1", "--out-dir", str(tmp_path)]))
    finally:
        torch.set_num_threads(threads)
    assert sorted(map(int, m["iwae"])) == [1, 10, 21] and len(m["k_hat"]) == 5


def test_closed_form_evidence_matches_importance_sampling():
    example = runpy.run_path(str(EXAMPLE))
    torch.manual_seed(0)
    pair = example["FactorAnalysis"](data_dim=4, num_factors=2)
    x = example["simulate"](5, 4, 2, seed=1)
    with torch.no_grad():
        exact = pair.log_marginal(x)
    # the untrained guide is a poor proposal, so many particles: 40000 weights of a
    # 2-d Gaussian problem leave a Monte Carlo error of a few thousandths of a nat
    estimate = iwae_bound(pair.model, pair.guide, x, num_samples=40000, chunk_size=10000)
    assert torch.allclose(estimate, exact, atol=0.02), (estimate, exact)


def test_bad_shape_is_a_clear_error():
    example = runpy.run_path(str(EXAMPLE))
    pair = example["FactorAnalysis"](data_dim=4, num_factors=2)
    with pytest.raises(ValueError, match=r"x must be \[batch, 4\], got \[3, 5\]"):
        pair.model(torch.zeros(3, 5))
