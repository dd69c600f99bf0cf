"""Bounded per-frame stages on `tiny`: the DPT heads in frame groups give the same outputs."""

from __future__ import annotations

import pytest
import torch

import vggt_et
from vggt_et.export import ProgramShape, bound_head_frames


@pytest.fixture(scope="module")
def tiny_points():
    return vggt_et.load_model("tiny", random_weights=True, heads=["depth", "point"]).eval()


def _heads(model, images):
    tokens, start = model.aggregator(images)
    return [*model.depth_head(tokens, images, start), *model.point_head(tokens, images, start)]


@pytest.mark.parametrize("group", [1, 2])
def test_dpt_heads_in_frame_groups_equal_all_frames_at_once(tiny_points, group):
    images = torch.rand(1, 3, 3, 28, 42, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for head in (tiny_points.depth_head, tiny_points.point_head):
            head.frames_chunk_size = None
        whole = _heads(tiny_points, images)
        for head in (tiny_points.depth_head, tiny_points.point_head):
            head.frames_chunk_size = group
        grouped = _heads(tiny_points, images)
    for a, b in zip(grouped, whole, strict=True):
        assert a.shape == b.shape
        assert torch.linalg.vector_norm(a - b) <= 1e-6 * torch.linalg.vector_norm(b)


def test_head_group_follows_the_budget(tiny_points):
    shape = ProgramShape(4, 28, 42)
    per_frame = tiny_points.depth_head.full_resolution_bytes(28, 42)
    assert bound_head_frames(tiny_points, shape, 2 * per_frame + 1) == 2
    assert tiny_points.point_head.frames_chunk_size == 2
    assert bound_head_frames(tiny_points, shape, 1) == 1
    assert bound_head_frames(tiny_points, shape, None) == 8  # the official head's group
