"""Accuracy metrics between a program's outputs and a reference (eager model or ground truth)."""

from __future__ import annotations

import numpy as np


def rel_l2(actual: np.ndarray, expected: np.ndarray) -> float:
    """||a - e|| / ||e|| over the whole tensor (0 when both are zero)."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    denom = np.linalg.norm(expected)
    diff = np.linalg.norm(actual - expected)
    return float(diff / denom) if denom > 0 else float(diff)


def max_abs(actual: np.ndarray, expected: np.ndarray) -> float:
    return float(np.max(np.abs(np.asarray(actual, np.float64) - np.asarray(expected, np.float64))))


def depth_errors(pred: np.ndarray, ref: np.ndarray, valid: np.ndarray | None = None) -> dict[str, float]:
    """AbsRel = mean |p - r| / r and δ<1.25 = share of pixels with max(p/r, r/p) < 1.25, over valid r > 0."""
    pred, ref = np.asarray(pred, np.float64), np.asarray(ref, np.float64)
    mask = (ref > 0) & np.isfinite(ref) & np.isfinite(pred)
    if valid is not None:
        mask &= valid
    if not mask.any():
        return {"abs_rel": float("nan"), "delta1": float("nan")}
    p, r = np.maximum(pred[mask], 1e-12), ref[mask]
    ratio = np.maximum(p / r, r / p)
    return {"abs_rel": float(np.mean(np.abs(p - r) / r)), "delta1": float(np.mean(ratio < 1.25))}


def median_scale_aligned(pred: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Per-frame scale alignment for scale-ambiguous depth: pred · median(ref) / median(pred) over valid pixels.

    `pred`, `ref`: [S, H, W]; pixels with ref <= 0 are ignored (no ground truth there).
    """
    aligned = np.array(pred, dtype=np.float64, copy=True)
    for s in range(pred.shape[0]):
        mask = (ref[s] > 0) & np.isfinite(ref[s]) & (pred[s] > 0)
        if mask.any():
            aligned[s] *= np.median(ref[s][mask]) / np.median(pred[s][mask])
    return aligned


def tensor_metrics(actual: np.ndarray, expected: np.ndarray, *, is_depth: bool = False) -> dict[str, float]:
    """The compare contract's per-output metrics: rel_l2, max_abs and, for depth, abs_rel and delta1."""
    metrics = {"rel_l2": rel_l2(actual, expected), "max_abs": max_abs(actual, expected)}
    if is_depth:
        metrics.update(depth_errors(actual, expected))
    return metrics


def _angle_deg(cos: np.ndarray) -> np.ndarray:
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def relative_pose_errors(
    pred_extrinsics: np.ndarray, gt_extrinsics: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per frame pair (i < j): rotation error and translation-direction error in degrees.

    Extrinsics are camera-from-world [S, 3, 4]; comparing relative poses makes the metric independent of
    the world frame and (for translation, by using directions) of the reconstruction's scale.
    """

    def relative(ext: np.ndarray, i: int, j: int) -> tuple[np.ndarray, np.ndarray]:
        r_i, t_i, r_j, t_j = ext[i, :, :3], ext[i, :, 3], ext[j, :, :3], ext[j, :, 3]
        r = r_j @ r_i.T
        return r, t_j - r @ t_i

    rot, trans = [], []
    frames = pred_extrinsics.shape[0]
    for i in range(frames):
        for j in range(i + 1, frames):
            rp, tp = relative(np.asarray(pred_extrinsics, np.float64), i, j)
            rg, tg = relative(np.asarray(gt_extrinsics, np.float64), i, j)
            rot.append(_angle_deg((np.trace(rp @ rg.T) - 1) / 2))
            norm = np.linalg.norm(tp) * np.linalg.norm(tg)
            trans.append(_angle_deg(np.dot(tp, tg) / norm) if norm > 0 else 180.0)
    return np.array(rot), np.array(trans)


def pose_auc(rot_err: np.ndarray, trans_err: np.ndarray, max_threshold: int = 30) -> float:
    """Area under the accuracy curve of max(rotation, translation) error for thresholds 1..max degrees."""
    err = np.maximum(rot_err, trans_err)
    if err.size == 0:
        return float("nan")
    return float(np.mean([(err < t).mean() for t in range(1, max_threshold + 1)]))


def camera_metrics(pred_extrinsics: np.ndarray, gt_extrinsics: np.ndarray) -> dict[str, float]:
    rot, trans = relative_pose_errors(pred_extrinsics, gt_extrinsics)
    return {
        "rot_err_deg": float(np.mean(rot)) if rot.size else float("nan"),
        "trans_err_deg": float(np.mean(trans)) if trans.size else float("nan"),
        "auc30": pose_auc(rot, trans),
    }
