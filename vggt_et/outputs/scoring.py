"""Predictions scored against ground truth: depth after per-frame median scaling, cameras by relative pose.

One place for the figures `vggt-et compare`, the quantization benchmarks and the shipped checkpoint's quality
guard all quote, so they agree by construction.
"""

from __future__ import annotations

import numpy as np


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
