"""TFLite comparison target (litert-torch, the `tflite` extra): the same pass-rewritten program converts and
matches eager. CI installs the extra; where it is not installed this file is skipped as a whole."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("litert_torch", reason="the tflite extra is not installed: pip install -e '.[tflite]'")

import vggt_et  # noqa: E402
from vggt_et.options import CompileOptions
from vggt_et.pipeline.compile import compile_model  # noqa: E402
from vggt_et.pipeline.tflite import run_tflite  # noqa: E402
from vggt_et.runtime.metrics import rel_l2  # noqa: E402


def test_tiny_converts_to_tflite_and_matches_eager(tmp_path) -> None:
    out = tmp_path / "tiny.tflite"
    options = CompileOptions(
        preset="tiny", random_weights=True, backend="tflite", frames=2, height=28, width=42,
        outputs=("depth", "camera"), output=str(out),
    )  # fmt: skip
    report = compile_model(options, quiet=True)
    assert report["pte_bytes"] == out.stat().st_size > 0
    images = np.random.default_rng(0).random((1, 2, 3, 28, 42), dtype=np.float32)
    depth, depth_conf, pose_enc = run_tflite(str(out), images)
    with torch.no_grad():
        eager = vggt_et.load_model("tiny", random_weights=True)(torch.from_numpy(images))
    assert rel_l2(depth, eager["depth"].numpy()) <= 1e-4
    assert rel_l2(pose_enc, eager["pose_enc"].numpy()) <= 1e-4
