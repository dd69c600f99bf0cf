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
