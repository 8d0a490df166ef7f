"""The import rules of docs/architecture.md, checked on the source files themselves.

- ``ppl_models`` (what a model *is*) and ``inference`` (what is *done* to a pair) never import
  each other; only examples, benchmarks and tests put the two together.
- No module of the library imports another module's ``_private`` name.
- ``inference``'s modules import each other without a cycle, and the modules the wings share
  (``pair_check``, ``weights``, ``checks``, ...) import no wing, not even inside a function.
- One wing imports another in one direction only: ``training`` uses ``evidence`` (its
  validation ELBO); no other wing imports another wing.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("inference", "ppl_models")


def _modules(package: str, root: Path = ROOT) -> dict[str, Path]:
    """Dotted module name -> file, for every module of ``package`` under ``root``."""
    out = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _imports(module: str, path: Path) -> list[tuple[str, list[str], int]]:
    """``(imported module, imported names, line)`` for each import statement, with relative
    imports resolved against ``module``."""
    is_package = path.name == "__init__.py"
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, [], node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                anchor = anchor[:len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join(anchor + ([base] if base else []))
            found.append((base, [alias.name for alias in node.names], node.lineno))
    return found


@pytest.mark.parametrize("package, forbidden", [("inference", "ppl_models"),
                                                ("ppl_models", "inference")])
def test_models_and_inference_do_not_import_each_other(package, forbidden):
    offenders = _cross_imports(package, forbidden, ROOT)
    assert not offenders, "\n".join(offenders)


def _cross_imports(package: str, forbidden: str, root: Path) -> list[str]:
    return [f"{path.relative_to(root)}:{line} imports {target}"
            for module, path in _modules(package, root).items()
            for target, _, line in _imports(module, path)
            if target == forbidden or target.startswith(forbidden + ".")]


@pytest.mark.parametrize("package", PACKAGES)
def test_no_private_names_cross_module_borders(package):
    offenders = _private_imports(package, ROOT)
    assert not offenders, "\n".join(offenders)


def _private_imports(package: str, root: Path) -> list[str]:
    modules = _modules(package, root)
    offenders = []
    for module, path in modules.items():
        for target, names, line in _imports(module, path):
            if target.split(".")[0] not in PACKAGES or target == module:
                continue
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            if private or any(part.startswith("_") and not part.startswith("__")
                              for part in target.split(".")):
                offenders.append(f"{path.relative_to(root)}:{line} imports {private or target}"
                                 f" from {target}")
    return offenders


def test_inference_has_no_import_cycle():
    _check_no_cycle("inference", ROOT)


WINGS = ("inference.evidence", "inference.training", "inference.uses", "inference.coding")


def test_the_shared_modules_import_no_wing():
    # pair_check once imported training inside a function, out of sight of the cycle check
    for module, path in _modules("inference").items():
        if module == "inference" or module.startswith(WINGS):
            continue
        for target, names, line in _imports(module, path):
            wing = [w for w in WINGS if f"{target}.".startswith(f"{w}.") or
                    any(f"{target}.{n}" == w for n in names)]
            assert not wing, f"{path}:{line}: {module} imports the wing {wing[0]}"


# (importing wing, imported wing) pairs docs/architecture.md allows
WING_IMPORTS_ALLOWED = {("inference.training", "inference.evidence")}


def _wing_of(module: str) -> str | None:
    """The wing ``module`` belongs to, None for a root module."""
    return next((w for w in WINGS if f"{module}.".startswith(f"{w}.")), None)


def _wing_imports(root: Path) -> list[str]:
    """``"file:line: wing imports wing"`` for each import of one wing by another that
    :data:`WING_IMPORTS_ALLOWED` does not list (inside functions too)."""
    offenders = []
    for module, path in _modules("inference", root).items():
        own = _wing_of(module)
        if own is None:
            continue
        for target, names, line in _imports(module, path):
            for candidate in [target, *(f"{target}.{n}" for n in names)]:
                other = _wing_of(candidate)
                if other not in (None, own) and (own, other) not in WING_IMPORTS_ALLOWED:
                    offenders.append(f"{path.relative_to(root)}:{line}: {own} imports {other}")
                    break
    return offenders


def test_only_training_imports_another_wing():
    offenders = _wing_imports(ROOT)
    assert not offenders, "\n".join(offenders)


def _check_no_cycle(package: str, root: Path) -> None:
    modules = _modules(package, root)
    graph = {}
    for module, path in modules.items():
        edges = set()
        for target, names, _ in _imports(module, path):
            # ``from pkg import name`` may import the submodule pkg.name
            for candidate in [target, *(f"{target}.{n}" for n in names)]:
                if candidate in modules and candidate != module:
                    edges.add(candidate)
        graph[module] = edges
    # A package's __init__ importing its own submodules is the one allowed back edge.
    for module in graph:
        graph[module] = {t for t in graph[module] if not module.startswith(t + ".")
                         and not (t.startswith(module + ".") and modules[module].name ==
                                  "__init__.py")}
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycle = stack[stack.index(nxt):] + [nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_the_checker_sees_a_cycle_a_private_import_and_a_model_import(tmp_path):
    """The rules above fail on a tree that breaks them."""
    package = tmp_path / "inference"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from .b import _helper\n")
    (package / "b.py").write_text("from .a import thing\nimport ppl_models\n")
    with pytest.raises(AssertionError, match="import cycle"):
        _check_no_cycle("inference", tmp_path)
    assert any("_helper" in line for line in _private_imports("inference", tmp_path))
    assert _cross_imports("inference", "ppl_models", tmp_path) == [
        "inference/b.py:2 imports ppl_models"]


def test_the_checker_sees_a_wing_importing_another(tmp_path):
    """coding once imported resolve_device from training.fit, unseen by the rules above."""
    package = tmp_path / "inference"
    for wing in ("coding", "training", "evidence"):
        (package / wing).mkdir(parents=True)
        (package / wing / "__init__.py").write_text("")
    (package / "__init__.py").write_text("")
    (package / "coding" / "coder.py").write_text("from ..training.fit import resolve_device\n")
    (package / "training" / "fit.py").write_text("from ..evidence import elbo\n")
    assert _wing_imports(tmp_path) == [
        "inference/coding/coder.py:1: inference.coding imports inference.training"]
