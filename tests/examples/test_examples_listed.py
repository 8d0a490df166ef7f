"""Every example is run by some test with tiny settings and by `make examples`."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted(p.stem for p in (ROOT / "examples").glob("*.py"))


def test_every_example_is_run_by_a_test():
    tests = " ".join(p.read_text() for p in (ROOT / "tests" / "examples").glob("test_*.py"))
    missing = [name for name in EXAMPLES
               if not re.search(rf"examples[/\"', ]+{name}\.py|\b{name}\.py", tests)]
    assert not missing, f"examples without a test in tests/examples/: {missing}"


def test_every_example_is_in_the_makefile():
    makefile = (ROOT / "Makefile").read_text()
    listed = re.search(r"^EXAMPLES := (.*?)(?<!\\)$", makefile, re.M | re.S)
    assert listed, "the Makefile has no EXAMPLES list"
    names = set(listed.group(1).replace("\\", " ").split())
    assert names == set(EXAMPLES), (
        f"Makefile EXAMPLES differs from examples/: missing {set(EXAMPLES) - names}, "
        f"extra {names - set(EXAMPLES)}")
