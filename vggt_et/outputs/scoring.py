"""Predictions scored against ground truth: depth after per-frame median scaling, cameras by relative pose.

One place for the figures `vggt-et compare`, the quantization benchmarks and the shipped checkpoint's quality
guard all quote, so they agree by construction.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from vggt_et.data.held_out import HeldOutScene

Predict = Callable[["HeldOutScene"], dict[str, np.ndarray]]  # one scene's outputs, named as a program's


def ground_truth_metrics(outputs: dict[str, np.ndarray], truth: dict) -> dict[str, float]:
    """Depth AbsRel / δ<1.25 after per-frame median scale alignment (VGGT's depth has no metric scale);
    with cameras, relative rotation / translation-direction errors and AUC@30 over frame pairs."""
    from vggt_et.runtime.metrics import depth_errors, median_scale_aligned

    metrics: dict[str, float] = {}
    if "depth" in outputs:
        pred = outputs["depth"][0, ..., 0]
        metrics.update(depth_errors(median_scale_aligned(pred, truth["depth"]), truth["depth"]))
    if "pose_enc" in outputs:
        from vggt_et.outputs.geometry import pose_encoding_to_extri_intri
        from vggt_et.runtime.metrics import camera_metrics

        depth = truth["depth"]
        extrinsics, _ = pose_encoding_to_extri_intri(outputs["pose_enc"][0], tuple(depth.shape[-2:]))
        metrics.update(camera_metrics(np.asarray(extrinsics), truth["extrinsics"]))
    return metrics


def score_scenes(
    name: str,
    predict: Predict,
    scenes: Sequence[HeldOutScene],
    reference: Sequence[np.ndarray] | None = None,
) -> tuple[dict, list[np.ndarray]]:
    """Runs `predict` on every scene: the means of the per-scene metrics (plus ``per_scene``), and the
    depths it predicted; with `reference` depths (one per scene), also each depth's rel. L2 to it."""
    from tqdm import tqdm

    from vggt_et.runtime.metrics import rel_l2

    per_scene, depths = [], []
    for index, scene in enumerate(tqdm(scenes, desc=name, unit="scene", leave=False, file=sys.stderr)):
        outputs = predict(scene)
        metrics = {"seed": scene.seed, "path": scene.path, **ground_truth_metrics(outputs, scene.truth)}
        if reference is not None:
            metrics["depth_rel_l2_vs_fp32"] = rel_l2(outputs["depth"], reference[index])
        per_scene.append(metrics)
        depths.append(outputs["depth"])
    keys = [k for k in per_scene[0] if k not in ("seed", "path")]
    means = {k: float(np.mean([m[k] for m in per_scene])) for k in keys}
    return {**means, "per_scene": per_scene}, depths
