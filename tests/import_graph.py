"""The package's import graph, read from the source with `ast` (every import, at module level or inside a
function): which module imports which, and the rooms (top-level folders) they live in."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Folders and the package they are installed as (pyproject's package-dir).
SOURCES = {
    "vggt_et": "vggt_et",
    "passes": "vggt_et.passes",
    "quantizers": "vggt_et.quantizers",
    "runtime": "vggt_et.runtime",
}


def modules() -> dict[str, Path]:
    """{dotted module name: file} for every module of the package."""
    found = {}
    for folder, package in SOURCES.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([package, *parts])] = path
    return found


def _imported(name: str, path: Path, tree: ast.AST) -> Iterator[str]:
    is_package = path.name == "__init__.py"
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            yield target
            yield from (f"{target}.{alias.name}" for alias in node.names)


def import_graph() -> dict[str, set[str]]:
    """{module: the package's modules it imports}."""
    known = modules()
    graph = {}
    for name, path in known.items():
        tree = ast.parse(path.read_text(), str(path))
        graph[name] = {t for t in _imported(name, path, tree) if t in known and t != name}
    return graph


def room(module: str) -> str:
    """The room a module lives in: its folder ('passes', 'pipeline', 'model', ...), or for the package's
    top-level files their own name ('cli', 'options'), and 'vggt_et' for the package's __init__."""
    parts = module.split(".")
    if len(parts) == 1:
        return "vggt_et"
    return parts[1]


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found
