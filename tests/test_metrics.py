"""Accuracy metrics against closed forms."""

from __future__ import annotations

import math

import numpy as np

from vggt_et.runtime.metrics import (
    camera_metrics,
    depth_errors,
    median_scale_aligned,
    pose_auc,
    rel_l2,
    relative_pose_errors,
)


def _rot_y(deg: float) -> np.ndarray:
    a = math.radians(deg)
    return np.array([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]])


def _cams(angles: list[float], translations: list[list[float]]) -> np.ndarray:
    return np.stack(
        [
            np.concatenate([_rot_y(a), np.array(t)[:, None]], axis=1)
            for a, t in zip(angles, translations, strict=True)
        ]
    )


def test_relative_pose_errors_are_world_frame_and_scale_free() -> None:
    gt = _cams([0, 20, 45], [[0, 0, 1], [1, 0, 2], [0.5, 1, 3]])
    # The same cameras in another world frame and at another scale: zero error.
    world = np.eye(4)
    world[:3, :3], world[:3, 3] = _rot_y(33), [3, -1, 2]
    moved = np.stack([np.concatenate([c[:, :3], 2.5 * c[:, 3:]], axis=1) @ np.linalg.inv(world) for c in gt])
    rot, trans = relative_pose_errors(moved, gt)
    assert np.allclose(rot, 0, atol=1e-5)
    assert np.allclose(trans, 0, atol=1e-5)
    assert camera_metrics(gt, gt)["auc30"] == 1.0


def test_rotation_error_of_a_known_perturbation() -> None:
    gt = _cams([0, 20], [[0, 0, 1], [1, 0, 2]])
    pred = gt.copy()
    pred[1, :, :3] = _rot_y(10) @ gt[1, :, :3]
    rot, _ = relative_pose_errors(pred, gt)
    assert abs(rot[0] - 10) < 1e-6


def test_pose_auc_integrates_thresholds() -> None:
    assert pose_auc(np.array([0.5]), np.array([0.1])) == 1.0
    assert pose_auc(np.array([14.5]), np.array([1.0])) == 16 / 30  # counts thresholds 15..30
    assert pose_auc(np.array([40.0]), np.array([0.0])) == 0.0


def test_depth_metrics_after_median_alignment() -> None:
    rng = np.random.default_rng(0)
    ref = rng.uniform(1, 5, size=(2, 4, 5))
    ref[0, 0, 0] = 0  # no ground truth there
    pred = ref * np.array([3.0, 0.5])[:, None, None]  # per-frame scale only
    aligned = median_scale_aligned(pred, ref)
    errors = depth_errors(aligned, ref)
    assert errors["abs_rel"] < 1e-12 and errors["delta1"] == 1.0
    off = depth_errors(ref * 1.3, ref)
    assert abs(off["abs_rel"] - 0.3) < 1e-9 and off["delta1"] == 0.0
    assert abs(rel_l2(ref * 1.1, ref) - 0.1) < 1e-9
