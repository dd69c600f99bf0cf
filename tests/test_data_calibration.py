"""Calibration view groups: spread over scenes, at the compiled shape, synthetic fallback announced."""

import logging

import torch

from vggt_et.data.calibration import calibration_groups
from vggt_et.data.synthetic import write_synthetic_dataset


def test_groups_from_a_root_spread_over_scenes(tmp_path):
    write_synthetic_dataset(tmp_path, n_scenes=2, n_views=5, height=48, width=64, seed=3)
    groups = calibration_groups(tmp_path, frames=3, height=42, width=56, n_groups=3, seed=1)
    assert [g.scene for g in groups] == ["synthetic_3_00", "synthetic_3_00", "synthetic_3_01"]
    assert all(g.images.shape == (3, 3, 42, 56) and g.depths is None for g in groups)
    again = calibration_groups(tmp_path, frames=3, height=42, width=56, n_groups=3, seed=1)
    assert [g.view_ids for g in again] == [g.view_ids for g in groups]
    assert all(torch.equal(a.images, b.images) for a, b in zip(again, groups, strict=True))


def test_synthetic_fallback_is_announced(caplog):
    with caplog.at_level(logging.WARNING):
        groups = calibration_groups(None, frames=2, height=28, width=42, n_groups=2, with_depth=True)
    assert "synthetic" in caplog.text
    assert "default calibration scenes" not in caplog.text  # our own scenes: no BlendedMVS-list warning
    assert [r.levelname for r in caplog.records].count("WARNING") == 1
    assert len(groups) == 2 and groups[0].images.shape == (2, 3, 28, 42)
    assert groups[0].depths.shape == (2, 28, 42) and (groups[0].depths > 0).float().mean() > 0.5
