"""examples/elbo_vs_iwae.py end to end with its tiny settings."""

import json
import runpy
import sys
from pathlib import Path

import pytest
import torch

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "elbo_vs_iwae.py"


def run(argv, monkeypatch):
    threads = torch.get_num_threads()
    monkeypatch.setattr(sys, "argv", [str(EXAMPLE), *argv])
    try:
        runpy.run_path(str(EXAMPLE), run_name="__main__")
    finally:
        torch.set_num_threads(threads)


def test_elbo_vs_iwae_example_runs(tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    run(["--tiny", "--threads", "1", "--quiet", "--datasets", "digits,fashion-mnist",
         "--objectives", "elbo,dreg-5", "--fashion-root", str(tmp_path / "missing"),
         "--out-dir", str(out)], monkeypatch)
    metrics = json.loads((out / "metrics.json").read_text())
    assert "fashion-mnist skipped" in capsys.readouterr().out
    assert set(metrics["skipped"]) == {"fashion-mnist"}
    models = metrics["datasets"]["digits"]["models"]
    assert set(models) == {"elbo", "dreg-5"}
    for name, m in models.items():
        rows = {r["bound"] + str(r["num_samples"]): r for r in m["bounds"]}
        # ELBO and IWAE_1 are the same average of the same weights: equal to float rounding
        assert rows["elbo1"]["mean"] == pytest.approx(rows["iwae1"]["mean"], abs=1e-4), name
        # IWAE_K rises with K in expectation (Burda et al. Thm 1); 3 standard errors of slack
        for small, large in ((1, 5), (5, 50), (50, 500)):
            lo, hi = rows[f"iwae{small}"], rows[f"iwae{large}"]
            slack = 3 * (lo["stderr"] + hi["stderr"])
            assert lo["mean"] <= hi["mean"] + slack, (name, small, large, lo, hi)
        assert len(m["k_hat"]) == len(m["ess_fraction"]) == 20
        assert all(0 < e <= 1 for e in m["ess_fraction"])
        # amortization gap >= 0 up to Monte Carlo error of the two ELBO estimates
        assert m["gaps"]["amortization"] > -0.05, (name, m["gaps"])
    for figure in ("bounds_vs_k_digits", "khat_digits", "gaps_digits"):
        assert (out / f"{figure}.png").stat().st_size > 1000, figure
    assert (out / "results.csv").read_text().startswith("dataset,trained_with,estimate")
    # tables re-rendered from metrics.json without training equal those of the run
    again = tmp_path / "again"
    run(["--tables-from", str(out / "metrics.json"), "--out-dir", str(again)], monkeypatch)
    assert (again / "tables.md").read_text() == (out / "tables.md").read_text()


def test_write_doc_tables_needs_markers(tmp_path):
    example = runpy.run_path(str(EXAMPLE))
    page = tmp_path / "page.md"
    page.write_text("text\n<!-- table:a -->\nold\n<!-- /table -->\nmore\n")
    assert example["write_doc_tables"](page, {"a": "| new |"}) == ["a"]
    assert page.read_text() == "text\n<!-- table:a -->\n| new |\n<!-- /table -->\nmore\n"
    with pytest.raises(ValueError, match="no '<!-- table:NAME -->' markers for \\['b'\\]"):
        example["write_doc_tables"](page, {"b": "| x |"})


def test_unknown_dataset_is_rejected(monkeypatch, capsys):
    with pytest.raises(SystemExit):
        run(["--datasets", "toy,cifar"], monkeypatch)
    assert "unknown ['cifar']" in capsys.readouterr().err
