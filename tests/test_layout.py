"""The package's shape, checked from its source with ``ast``: no import cycles (counting imports
inside functions too, so none can hide one), methods never import experiments or other papers'
reproductions, every registered experiment lives in its paper's package, and nothing cites a
file that does not ship with the package."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1] / "jaxtrust"


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _resolve(module: str, name: str | None) -> str | None:
    """The jaxtrust module an import names (``from a.b import c`` -> ``a.b.c`` if a module)."""
    if name is not None and f"{module}.{name}" in MODULES:
        return f"{module}.{name}"
    return module if module in MODULES else None


def _imports(path: Path, modname: str) -> list[tuple[str, int, bool]]:
    """(imported jaxtrust module, line, inside a function) for every import in ``path``."""
    tree = ast.parse(path.read_text())
    out = []
    package = modname if path.name == "__init__.py" else modname.rsplit(".", 1)[0]

    def visit(node, in_function):
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            if isinstance(child, ast.Import):
                for alias in child.names:
                    if alias.name.startswith("jaxtrust"):
                        target = _resolve(alias.name, None)
                        if target:
                            out.append((target, child.lineno, inner))
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    parts = package.split(".")
                    base = ".".join(
                        parts[: len(parts) - child.level + 1] + ([base] if base else [])
                    )
                if base.startswith("jaxtrust"):
                    for alias in child.names:
                        target = _resolve(base, alias.name)
                        if target:
                            out.append((target, child.lineno, inner))
            visit(child, inner)

    visit(tree, False)
    return out


GRAPH = {name: _imports(path, name) for name, path in MODULES.items()}


def _find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    color: dict[str, int] = {}
    stack: list[str] = []

    def dfs(node):
        color[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if color.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if color.get(nxt) is None:
                found = dfs(nxt)
                if found:
                    return found
        stack.pop()
        color[node] = 2
        return None

    for node in sorted(edges):
        if color.get(node) is None:
            found = dfs(node)
            if found:
                return found
    return None


def _edges(include_functions: bool) -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for src, imports in GRAPH.items():
        for target, _, inner in imports:
            if target == src or (inner and not include_functions):
                continue
            # every edge counts: a submodule importing its own package's __init__, which
            # imports the submodule back, is a cycle too
            edges.setdefault(src, set()).add(target)
    return edges


def test_the_graph_is_read():
    assert len(MODULES) > 40
    assert any(t == "jaxtrust.training.step" for t, _, _ in GRAPH["jaxtrust.training.loop"])


def test_no_import_cycle_even_counting_imports_inside_functions():
    cycle = _find_cycle(_edges(include_functions=True))
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_a_cycle():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set()}) is None


PAPERS = {
    name.rsplit(".", 1)[0]
    for name in MODULES
    if name.endswith(".reproduce") and name.count(".") == 3
}


def test_every_listed_experiment_is_a_paper_reproduction_or_the_foundation_demo():
    from jaxtrust.experiments.registry import EXPERIMENT_MODULES

    for name, module in EXPERIMENT_MODULES.items():
        assert module in MODULES, f"{name}: {module} does not exist"
        assert module.endswith(".reproduce") or module == "jaxtrust.experiments.lm", module


def _is_reproduction(module: str) -> bool:
    """``reproduce`` and its private helpers ``_reproduce_*`` (a reproduction, not a method)."""
    last = module.rsplit(".", 1)[-1]
    return last == "reproduce" or last.startswith("_reproduce")


def test_methods_and_experiments_never_import_reproductions_or_each_other():
    for src, imports in GRAPH.items():
        for target, line, _ in imports:
            if not _is_reproduction(target) or src == "jaxtrust.experiments.registry":
                continue
            if target.rsplit(".", 1)[0] == src.rsplit(".", 1)[0] and _is_reproduction(src):
                continue  # a reproduction using its own private helpers
            pytest.fail(f"{src}:{line} imports the reproduction {target}")
    for paper in PAPERS:
        # a reproduction may use other papers' *methods* (SPF's compares with one-shot
        # recovery) but a method may not depend on another paper's package at all
        for src, imports in GRAPH.items():
            if not src.startswith(paper + ".") or _is_reproduction(src):
                continue
            for target, line, _ in imports:
                other = next((p for p in PAPERS if target.startswith(p + ".") or target == p), None)
                if other is not None and other != paper:
                    pytest.fail(f"method module {src}:{line} imports another paper: {target}")


def test_the_core_never_imports_a_paper():
    core = (
        "jaxtrust.models",
        "jaxtrust.data",
        "jaxtrust.training",
        "jaxtrust.eval",
        "jaxtrust.zoo",
    )
    for src, imports in GRAPH.items():
        if not src.startswith(core):
            continue
        for target, line, _ in imports:
            paper = next((p for p in PAPERS if target.startswith(p)), None)
            assert paper is None, f"core module {src}:{line} imports the paper package {target}"


def test_no_docstring_cites_a_file_that_does_not_ship():
    pattern = re.compile(r"shared/methods|jax_ecosystem\.md|/work/|ASSETS\.md")
    for path in MODULES.values():
        for i, line in enumerate(path.read_text().splitlines(), 1):
            assert not pattern.search(line), f"{path}:{i} cites a file outside the package: {line}"


def test_py_typed_ships():
    assert (ROOT / "py.typed").is_file()
