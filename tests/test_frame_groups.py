"""Bounded per-frame stages on `tiny`: the DPT heads in frame groups give the same outputs."""

from __future__ import annotations

import pytest
import torch

import vggt_et
from vggt_et.options import ProgramShape
from vggt_et.pipeline.export import bound_head_frames


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


@pytest.mark.slow
def test_runner_memory_grows_linearly_with_bounded_attention(tmp_path_factory, runner):
    """tiny at 336x336, --attention-budget 4MiB, 2/4/8 frames, `vggt-et bench --host`: the runner's peak RSS
    grows about linearly, (RSS8 - RSS4) / (RSS4 - RSS2) <= 2.6 (with the whole attention it is 4.8). Slow: the
    8-frame program's lowering takes minutes."""
    import json

    from click.testing import CliRunner

    from vggt_et.cli import main

    rss = {}
    for frames in (2, 4, 8):
        out = tmp_path_factory.mktemp(f"rss{frames}")
        pte, stats = str(out / "m.pte"), str(out / "bench.json")
        base = ["--preset", "tiny", "--random-weights", "--height", "336", "--width", "336"]
        args = ["compile", *base, "--frames", str(frames), "--attention-budget", "4MiB", "-o", pte]
        assert CliRunner().invoke(main, args).exit_code == 0
        result = CliRunner().invoke(
            main, ["bench", pte, "--host", "--iters", "1", "--runner", str(runner), "--json", stats]
        )
        assert result.exit_code == 0, result.output
        report = json.loads(open(stats).read())
        assert report["check"]["ok"]
        rss[frames] = report["peak_rss_bytes"]
    assert (rss[8] - rss[4]) / (rss[4] - rss[2]) <= 2.6, rss


@pytest.mark.parametrize("group", [1, 2])
def test_omega_dense_head_in_frame_groups_equals_all_frames_at_once(group):
    """VGGT-Ω's dense head runs frames in groups too (same trunk), exactly."""
    model = vggt_et.load_model("vggt-omega-tiny", random_weights=True).eval()
    images = torch.rand(1, 3, 3, 32, 48, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        tokens, start = model.aggregator(images)
        model.dense_head.frames_chunk_size = None
        whole = model.dense_head(tokens, images, start)
        model.dense_head.frames_chunk_size = group
        grouped = model.dense_head(tokens, images, start)
    for a, b in zip(grouped, whole, strict=True):
        assert a.shape == b.shape
        assert torch.linalg.vector_norm(a - b) <= 1e-6 * torch.linalg.vector_norm(b)


def test_omega_head_group_follows_the_budget():
    model = vggt_et.load_model("vggt-omega-tiny", random_weights=True)
    per_frame = model.dense_head.full_resolution_bytes(32, 48)
    assert bound_head_frames(model, ProgramShape(4, 32, 48, 16), 2 * per_frame + 1) == 2
    assert model.dense_head.frames_chunk_size == 2
