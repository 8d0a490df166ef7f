"""docs/own-pair.md's support table says what the zoo tests: each cell "works" exactly where
tests/zoo/test_zoo.py expects the entry point to work, "refused" where it expects a refusal."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from zoo_pairs import ENTRY_POINTS, FEATURES, PAIRS, WORKS  # noqa: E402

DOC = Path(__file__).resolve().parents[2] / "docs" / "own-pair.md"
REASONS = [  # (fragment of the refusal regex, the table's short reason)
    ("not reparameterized", "no score-function term"),
    ("discrete", "discrete latent"),
    ("keeps parameters", "per-row params: pass indices"),
    ("lies outside", "global latent"),
    ("does not have", "guide-only site"),
    ("marked for enumeration", "model-enumerated latent"),
    ("not sampled by the guide", "latent missing in guide"),
    ("is a ", "local guides are Normal/MVN"),
]


def cell(pair, entry) -> str:
    expected = pair.expected(entry)
    if expected == WORKS:
        return "works"
    reason = next(text for fragment, text in REASONS if fragment in expected)
    return f"refused: {reason}"


def support_table() -> str:
    """The markdown table: features (rows) x entry points (columns)."""
    lines = ["| pair feature (zoo pair) | " + " | ".join(f"`{e}`" for e in ENTRY_POINTS) + " |",
             "|---" * (len(ENTRY_POINTS) + 1) + "|"]
    for feature, name in FEATURES.items():
        pair = PAIRS[name]()
        lines.append(f"| {feature} (`{name}`) | "
                     + " | ".join(cell(pair, e) for e in ENTRY_POINTS) + " |")
    return "\n".join(lines)


def test_every_zoo_pair_has_a_row():
    assert set(FEATURES.values()) == set(PAIRS)


def test_doc_table_matches_the_zoo():
    text = DOC.read_text()
    assert support_table() in text, (
        "docs/own-pair.md's support table differs from the zoo; regenerate it with\n"
        "python tests/zoo/test_support_table.py")


if __name__ == "__main__":
    print(support_table())
