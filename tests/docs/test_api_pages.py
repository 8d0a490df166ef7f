"""docs/api/ documents every public module of both packages (a new module needs its line)."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def public_modules(package: str) -> set[str]:
    names = set()
    for path in (ROOT / package).rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] != "__init__" and not any(p.startswith("_") for p in parts):
            names.add(".".join(parts))
    return names


def test_every_public_module_has_an_api_entry():
    pages = "\n".join(p.read_text() for p in (ROOT / "docs" / "api").glob("*.md"))
    documented = set(re.findall(r"^::: ([\w.]+)\s*$", pages, flags=re.MULTILINE))
    modules = public_modules("inference") | public_modules("ppl_models")
    assert len(modules) > 30
    missing, stale = sorted(modules - documented), sorted(documented - modules)
    assert not missing, f"modules without a docs/api entry: {missing}"
    assert not stale, f"docs/api entries of no module: {stale}"


def test_the_docstrings_sphinx_roles_render_as_the_names_code():
    # 513 roles showed as ":func:" before the name on the API pages
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "docstring_roles", ROOT / "docs" / "hooks" / "docstring_roles.py")
    hook = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hook)
    html = ("<p>see :func:<code>inference.fit</code>, :class:<code>~inference.KeepBest</code>"
            " and :meth:<code>~ppl_models.VAE.model</code>; a plain <code>x</code></p>")
    assert hook.on_page_content(html) == (
        "<p>see <code>inference.fit</code>, <code>KeepBest</code> and <code>model</code>; a "
        "plain <code>x</code></p>")
    config = (ROOT / "mkdocs.yml").read_text()
    assert "docs/hooks/docstring_roles.py" in config
