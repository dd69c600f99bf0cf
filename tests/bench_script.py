"""Running a script of benchmarks/ as a user does, for the tests that check its table and files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def run_benchmark(script: str, *args: str, timeout: float = 600) -> str:
    """`python benchmarks/SCRIPT ARGS` in a fresh process; its stdout (the table), after checking it exited 0."""
    completed = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args],
        capture_output=True,
        text=True,
        errors="replace",
        timeout=timeout,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    return completed.stdout


def load_benchmark(script: str):
    """The module of `benchmarks/SCRIPT`, imported for its functions (its `_common` found beside it)."""
    import importlib.util

    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(f"{Path(script).stem}_benchmark", BENCHMARKS / script)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses need the module registered
    spec.loader.exec_module(module)
    return module
