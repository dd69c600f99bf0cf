"""The house rules (docs/architecture.md), checked on the import graph read from the source: no import
cycle, each room imports only the rooms below it, the generic rooms nothing of VGGT, and every folder is
documented where a newcomer looks."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from import_graph import ROOT, cycles, import_graph, modules, room

# What each room may import besides itself: a DAG, lowest first. `utils` is the leaf every room may use;
# `passes`, `quantizers` and `runtime` are generic (no VGGT) and `runtime` runs programs without quantizers.
ALLOWED = {
    "utils": set(),
    "options": {"utils"},
    "passes": {"utils"},
    "quantizers": {"utils"},
    "runtime": {"utils"},
    "model": {"utils"},
    "data": {"options", "utils"},
    "outputs": {"data", "runtime", "options", "utils"},
    "fgq": {"quantizers", "model", "data", "options", "utils"},
    "training": {"data", "outputs", "utils"},
    "pipeline": {"fgq", "passes", "quantizers", "model", "data", "options", "utils"},
    "commands": {
        "training",
        "pipeline",
        "fgq",
        "outputs",
        "runtime",
        "passes",
        "quantizers",
        "model",
        "data",
        "options",
        "utils",
    },
    "cli": {"commands", "options", "utils"},
    "vggt_et": {"model"},
}
FOLDERS = [
    "passes",
    "quantizers",
    "runtime",
    *sorted(p.name for p in (ROOT / "vggt_et").iterdir() if (p / "__init__.py").is_file()),
]


def test_no_import_cycle() -> None:
    assert cycles(import_graph()) == []


def test_every_room_is_in_the_rules() -> None:
    assert {room(m) for m in modules()} <= set(ALLOWED)


@pytest.mark.parametrize("source", sorted(ALLOWED))
def test_rooms_import_only_the_rooms_below_them(source: str) -> None:
    wrong = sorted(
        f"{module} imports {target}"
        for module, targets in import_graph().items()
        if room(module) == source
        for target in targets
        if room(target) not in ALLOWED[source] | {source}
    )
    assert wrong == [], f"{source} may import only {sorted(ALLOWED[source])}"


def test_the_rules_form_a_dag() -> None:
    assert cycles({r: set(d) for r, d in ALLOWED.items()}) == []


@pytest.mark.parametrize("folder", FOLDERS)
def test_every_folder_says_what_it_owns_and_must_not_import(folder: str) -> None:
    init = (
        ROOT / folder if folder in ("passes", "quantizers", "runtime") else ROOT / "vggt_et" / folder
    ) / "__init__.py"
    doc = ast.get_docstring(ast.parse(init.read_text())) or ""
    assert len(doc) > 80 and "import" in doc.lower(), (
        f"{init}: the docstring names what the folder owns and its import rule"
    )


@pytest.mark.parametrize("document", ["README.md", "docs/architecture.md"])
def test_every_folder_is_named_in_the_maps(document: str) -> None:
    text = (ROOT / document).read_text()
    missing = [f for f in [*FOLDERS, "android_runner", "benchmarks", "tests"] if f"{f}/" not in text]
    assert missing == [], f"{document} does not name {missing}"


def test_product_and_library_attention_budgets_agree() -> None:
    from vggt_et.options import DEFAULT_ATTENTION_BUDGET
    from vggt_et.passes.bounded_attention import DEFAULT_ATTENTION_BUDGET as LIBRARY_DEFAULT

    assert DEFAULT_ATTENTION_BUDGET == LIBRARY_DEFAULT


def test_graph_reader_sees_lazy_and_relative_imports() -> None:
    graph = import_graph()
    assert "vggt_et.fgq.w4_fisher" in graph["vggt_et.pipeline.compile"]  # imported inside a function
    assert "vggt_et.passes.graph_utils" in graph["vggt_et.passes.sdpa"]  # `from .graph_utils import ...`
    assert Path(modules()["vggt_et.passes"]).name == "__init__.py"


def test_every_package_is_installed() -> None:
    """pyproject lists packages explicitly: a folder missing there works in a checkout and is absent from
    a wheel."""
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    packages = {m for m, path in modules().items() if path.name == "__init__.py"}
    assert packages - listed == set()
