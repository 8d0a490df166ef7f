"""docs/elbo-vs-iwae.md: its tiny tables must equal a fresh run of the command shown beside them."""

import re
import runpy
import shlex
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "elbo_vs_iwae.py"
PAGE = ROOT / "docs" / "elbo-vs-iwae.md"
NUMBER = re.compile(r"-?\d+\.\d+")
# Printed with 2-3 decimals; summation order differs between BLAS builds and CPUs, which can
# move a printed digit by one. Any real change of the code moves the numbers by far more.
TOLERANCE = 0.02


def tiny_command() -> list[str]:
    """The arguments of the page's tiny command (the one line with ``--tiny``)."""
    lines = [line.strip() for line in PAGE.read_text().splitlines()
             if line.strip().startswith("python examples/elbo_vs_iwae.py") and "--tiny" in line]
    assert len(lines) == 1, f"expected one tiny command on the page, got {lines}"
    return [a for a in shlex.split(lines[0])[2:] if a != "--write-docs"]


def test_tiny_tables_match_a_fresh_run(tmp_path):
    example = runpy.run_path(str(EXAMPLE))
    page = {name: body for name, body in example["read_doc_tables"](PAGE.read_text()).items()
            if "-tiny-" in name}
    assert page, "the page has no tiny tables"
    args = example["parse_args"]([*tiny_command(), "--out-dir", str(tmp_path)])
    assert args.tiny and not args.write_docs
    threads = torch.get_num_threads()
    try:
        metrics = example["main"](args)
    finally:
        torch.set_num_threads(threads)
    fresh = example["render_tables"](metrics, "tiny")
    assert set(page) == set(fresh), (sorted(page), sorted(fresh))
    for name, body in page.items():
        # the same words in the same places ...
        assert NUMBER.sub("#", body) == NUMBER.sub("#", fresh[name]), (name, fresh[name])
        # ... and the same numbers up to printing noise
        for old, new in zip(NUMBER.findall(body), NUMBER.findall(fresh[name])):
            assert abs(float(old) - float(new)) <= TOLERANCE, (
                f"table {name}: the page has {old}, a fresh run gives {new}; rerun the "
                f"page's tiny command with --write-docs\n{fresh[name]}")
