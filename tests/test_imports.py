"""The package's import graph: module-level and function-level imports between pointkd modules
form no cycle (a cycle makes import order matter and hides dead compatibility code)."""

from __future__ import annotations

import ast
from pathlib import Path

import pointkd

SRC = Path(pointkd.__file__).parent
KNOWN_CYCLES: list[set[str]] = []


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """{module: pointkd modules it imports anywhere in its body}."""
    paths = {_module_name(p): p for p in SRC.rglob("*.py")}
    graph = {}
    for name, path in paths.items():
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("pointkd"):
                for alias in node.names:  # `from pkg import submodule` imports the submodule
                    sub = f"{node.module}.{alias.name}"
                    edges.add(sub if sub in paths else node.module)
            elif isinstance(node, ast.Import):
                edges |= {a.name for a in node.names if a.name.startswith("pointkd")}
        graph[name] = (edges & paths.keys()) - {name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(component)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_graph_sees_the_imports():
    graph = import_graph()
    assert "pointkd.models.ops" in graph["pointkd.models.layers"]
    assert "pointkd.data._core" in graph["pointkd.data.hdf5"]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]


def test_no_import_cycles_between_pointkd_modules():
    found = [c for c in cycles(import_graph()) if c not in KNOWN_CYCLES]
    assert not found, f"import cycles: {[sorted(c) for c in found]}"


# Which layer may import which (module-level and function-level imports alike): storage and
# settings sit below the stages; the training loop and the teachers do not reach up into them.
FORBIDDEN = {
    "pointkd.records": ("pointkd.models", "pointkd.teachers", "pointkd.training",
                        "pointkd.stages", "pointkd.checkpoint"),
    "pointkd.config": ("pointkd.models", "pointkd.teachers", "pointkd.training",
                       "pointkd.stages", "pointkd.records", "pointkd.data"),
    "pointkd.training": ("pointkd.stages", "pointkd.cli", "pointkd.api"),
    "pointkd.teachers": ("pointkd.stages", "pointkd.training", "pointkd.cli", "pointkd.api"),
    "pointkd.models": ("pointkd.stages", "pointkd.training", "pointkd.teachers",
                       "pointkd.records"),
}


def _inside(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_each_layer_imports_only_what_lies_below_it():
    graph = import_graph()
    wrong = sorted(f"{m} imports {t}" for m, targets in graph.items() for t in targets
                   for pkg, banned in FORBIDDEN.items() if _inside(m, pkg)
                   for b in banned if _inside(t, b))
    assert not wrong, wrong


def test_the_layer_rules_see_a_violation():
    assert _inside("pointkd.records.reader", "pointkd.records")
    assert not _inside("pointkd.recordsx", "pointkd.records")
    assert "pointkd.records.format" in import_graph()["pointkd.records.reader"]


def test_settings_load_without_torch():
    """The CLI builds its options from the configs: `pointkd --help` needs no torch."""
    import subprocess
    import sys

    code = ("import sys, pointkd.config.run, pointkd.config.stages, pointkd.cli; "
            "pointkd.cli.build_parser(); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "False"
