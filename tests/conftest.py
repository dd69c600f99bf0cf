"""Shared fixtures: small models and paths. Tests run on the `tiny` preset (fast tier)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
MANIFEST = REPO.parent / "shared" / "vggt1b_state_dict_manifest.json"

# Two cores are shared by everything on CI machines; oversubscription only slows tests down.
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def manifest() -> dict:
    if not MANIFEST.is_file():
        pytest.fail(f"{MANIFEST} missing: CI clones the repo with shared/ beside it")
    return json.loads(MANIFEST.read_text())


@pytest.fixture(scope="session")
def tiny_model():
    import vggt_et

    return vggt_et.load_model("tiny", random_weights=True, seed=0)


@pytest.fixture(scope="module")
def one_thread():
    """Small matmuls: one intra-op thread avoids spin-wait overhead on the shared 2-core machines."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def runner():
    """The host C++ runner, built (incrementally) once per session."""
    from vggt_et.runtime.runner_build import build_runner

    return build_runner("host")


@pytest.fixture(scope="module")
def toy():
    """A small fp32 XNNPACK toy program (conv + attention), cached on disk."""
    from toy_runtime import cached_toy_pte

    return cached_toy_pte("fp32")


TINY_SHAPE = {"frames": 2, "height": 28, "width": 42}


def _compile_tiny(folder: Path, name: str, outputs: tuple[str, ...]) -> Path:
    from vggt_et.options import CompileOptions
    from vggt_et.pipeline.compile import compile_model

    out = folder / f"{name}.pte"
    compile_model(
        CompileOptions(preset="tiny", random_weights=True, output=str(out), outputs=outputs, **TINY_SHAPE),
        quiet=True,
    )
    return out


@pytest.fixture(scope="session")
def tiny_depth_pte(tmp_path_factory) -> Path:
    """`tiny` (random weights, seed 0), 2 frames at 28x42, depth only: the program CLI tests run."""
    return _compile_tiny(tmp_path_factory.mktemp("tiny_depth"), "tiny_depth", ("depth",))


@pytest.fixture(scope="session")
def tiny_points_pte(tmp_path_factory) -> Path:
    """The same model with depth, points and camera outputs."""
    return _compile_tiny(tmp_path_factory.mktemp("tiny_points"), "tiny_points", ("depth", "points", "camera"))


@pytest.fixture(scope="session")
def vggt_et_cli() -> list[str]:
    """The installed console script, as a user runs it (signal handling and error folding included)."""
    import shutil
    import sys

    script = shutil.which("vggt-et")
    return [script] if script else [sys.executable, "-m", "vggt_et.cli"]
