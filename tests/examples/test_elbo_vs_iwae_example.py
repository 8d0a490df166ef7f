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
    run(["--tiny", "--threads", "1", "--quiet", "--datasets", "toy,digits,fashion-mnist",
         "--objectives", "elbo,dreg-5", "--fashion-root", str(tmp_path / "missing"),
         "--out-dir", str(out)], monkeypatch)
    metrics = json.loads((out / "metrics.json").read_text())
    printed = capsys.readouterr().out
    assert "fashion-mnist skipped" in printed
    assert set(metrics["skipped"]) == {"fashion-mnist"}
    # the toy has the Gaussian guide only, and says why
    toy = metrics["datasets"]["toy"]
    assert set(toy["pairs"]) == {"gaussian"}
    assert set(toy["skipped_pairs"]) == {"flow", "two-layer"}
    assert "affine map" in toy["skipped_pairs"]["flow"] and "toy: no flow rows" in printed
    pairs = metrics["datasets"]["digits"]["pairs"]
    assert set(pairs) == {"gaussian", "flow", "two-layer"}
    for pair, entry in pairs.items():
        models = entry["models"]
        assert set(models) == {"elbo", "dreg-5"}
        for name, m in models.items():
            rows = {r["bound"] + str(r["num_samples"]): r for r in m["bounds"]}
            # ELBO and IWAE_1 are the same average of the same weights: equal to float rounding
            assert rows["elbo1"]["mean"] == pytest.approx(rows["iwae1"]["mean"], abs=1e-4), name
            # IWAE_K rises with K in expectation (Burda et al. Thm 1); 3 standard errors of slack
            for small, large in ((1, 5), (5, 50), (50, 500)):
                lo, hi = rows[f"iwae{small}"], rows[f"iwae{large}"]
                slack = 3 * (lo["stderr"] + hi["stderr"])
                assert lo["mean"] <= hi["mean"] + slack, (pair, name, small, large, lo, hi)
            assert len(m["k_hat"]) == len(m["ess_fraction"]) == 20
            assert all(0 < e <= 1 for e in m["ess_fraction"])
            gaps = m["gaps"]
            # amortization gap >= 0 up to Monte Carlo error of the two ELBO estimates, and
            # the two gaps add up to log p(x) - ELBO
            assert gaps["amortization"] > -0.05, (pair, name, gaps)
            assert gaps["approximation"] + gaps["amortization"] == pytest.approx(
                gaps["log_evidence"] - gaps["elbo_amortized"], abs=1e-4)
            # the Gaussian guide uses inference.amortization_gap, the others their own family
            assert gaps["local_family"] == ("gaussian" if pair == "gaussian" else "local")
    for figure in ("bounds_vs_k_digits", "khat_digits", "gaps_digits", "bounds_vs_k_toy"):
        assert (out / f"{figure}.png").stat().st_size > 1000, figure
    tables = (out / "tables.md").read_text()
    names = [line for line in tables.splitlines() if line and not line.startswith("|")]
    # one pair on the toy: no comparison; three on digits: a row per pair and objective
    assert names == ["toy-tiny-bounds", "toy-tiny-diagnostics", "digits-tiny-bounds",
                     "digits-tiny-diagnostics", "digits-tiny-gaps"]
    assert tables.count("| IAF flow guide | DReG, K=5 |") == 3
    csv = (out / "results.csv").read_text()
    assert csv.startswith("dataset,pair,trained_with,estimate")
    assert "digits,two-layer,dreg-5,iwae_500," in csv
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


@pytest.mark.parametrize("page, message", [
    ("missing.md", "no such file"),
    ("folder", "a folder"),
    ("page.md", "has no '<!-- table:NAME -->' markers for ['toy-tiny-bounds', "
                "'toy-tiny-diagnostics']"),
])
def test_write_docs_checks_its_page_before_training(tmp_path, monkeypatch, page, message):
    """A missing page, a folder, or a page without the run's markers was found only after
    the whole run (a folder with a traceback)."""
    (tmp_path / "folder").mkdir()
    (tmp_path / "page.md").write_text("<!-- table:digits-tiny-bounds -->\n<!-- /table -->\n")
    example = runpy.run_path(str(EXAMPLE))
    monkeypatch.setitem(example["main"].__globals__, "run_dataset", lambda *a: 1 / 0)
    args = example["parse_args"](["--tiny", "--threads", "1", "--quiet", "--datasets", "toy",
                                  "--write-docs", "--docs-page", str(tmp_path / page),
                                  "--out-dir", str(tmp_path / "out")])
    with pytest.raises(SystemExit) as refused:
        example["main"](args)
    assert f"--docs-page {tmp_path / page}" in str(refused.value)
    assert message in str(refused.value)


def test_unknown_dataset_or_pair_is_rejected(monkeypatch, capsys):
    with pytest.raises(SystemExit):
        run(["--datasets", "toy,cifar"], monkeypatch)
    assert "unknown ['cifar']" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run(["--pairs", "flow,ladder"], monkeypatch)
    assert "unknown ['ladder']" in capsys.readouterr().err


def test_max_k_caps_the_particles_of_k_hat_too():
    # --max-k 100 left k-hat at 5000 (1000 on Fashion-MNIST) importance weights per point
    example = runpy.run_path(str(EXAMPLE))
    for name, preset in example["FULL"].items():
        budget = example["dataset_budget"](preset, example["parse_args"](["--max-k", "100"]))
        assert (budget.max_k, budget.khat_k) == (100, 100), name
    tiny = example["TINY"]["toy"]
    budget = example["dataset_budget"](tiny, example["parse_args"](["--max-k", "5000"]))
    assert (budget.max_k, budget.khat_k) == (5000, tiny.khat_k)
    assert example["dataset_budget"](tiny, example["parse_args"]([])) == tiny


def test_a_data_set_without_the_pairs_asked_for_gets_no_figures(tmp_path, monkeypatch, capsys):
    # the toy has no flow pair: its empty panels failed after the training ("max() arg is
    # an empty sequence"), and tables.md, results.csv and every figure went unwritten
    with pytest.raises(SystemExit):
        run(["--datasets", "toy", "--pairs", "flow"], monkeypatch)
    assert "--pairs: none of flow runs on toy" in capsys.readouterr().err
    out = tmp_path / "out"
    run(["--tiny", "--threads", "1", "--quiet", "--datasets", "toy,digits", "--pairs", "flow",
         "--objectives", "elbo", "--out-dir", str(out)], monkeypatch)
    written = {path.name for path in out.iterdir()}
    assert {"tables.md", "results.csv", "bounds_vs_k_digits.png"} <= written
    assert "bounds_vs_k_toy.png" not in written
