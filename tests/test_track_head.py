"""Track head: checkpoint layout (VGGT-1B, on the meta device) and hand-checked numerics of its pieces.

Bit-exactness against the official implementation was checked outside the repository (the official
code is not a test dependency); these tests pin the conventions that comparison relied on.
"""

from __future__ import annotations

import math

import pytest
import torch

from vggt_et.model.track_head import TrackHead, build_track_head
from vggt_et.model.track_modules import (
    AttnBlock,
    CorrelationPyramid,
    CrossAttnBlock,
    bilinear_sample,
    flow_embedding_2d,
    sample_features_at_points,
    sincos_pos_embed_2d,
)
from vggt_et.model.track_predictor import BaseTrackerPredictor

VGGT1B_TRACK_HEAD_PARAMS = 65_941_396


def _section(manifest: dict, prefix: str) -> dict[str, list[int]]:
    return {k[len(prefix) :]: v for k, v in manifest["tensors"].items() if k.startswith(prefix)}


def _shapes(module: torch.nn.Module) -> dict[str, list[int]]:
    return {k: list(v.shape) for k, v in module.state_dict().items()}


# --------------------------------------------------------------------------------- checkpoint layout


def test_tracker_matches_vggt1b_manifest_keys_shapes_and_order(manifest):
    expected = _section(manifest, "track_head.tracker.")
    with torch.device("meta"):
        tracker = BaseTrackerPredictor(
            stride=2, corr_levels=7, corr_radius=4, latent_dim=128, hidden_size=384
        )
    assert list(_shapes(tracker).items()) == list(expected.items())


def test_track_head_matches_vggt1b_manifest(manifest):
    expected = _section(manifest, "track_head.")
    with torch.device("meta"):
        head = TrackHead(dim_in=2048, patch_size=14)
    assert _shapes(head) == expected
    assert list(_shapes(head)) == list(expected)  # state_dict order too
    assert sum(p.numel() for p in head.parameters()) == VGGT1B_TRACK_HEAD_PARAMS


def test_build_track_head_from_vggt1b_preset_equals_default_head():
    from vggt_et.model.presets import get_preset

    with torch.device("meta"):
        from_preset = build_track_head(get_preset("vggt-1b"))
        default = TrackHead()
    assert _shapes(from_preset) == _shapes(default)


# --------------------------------------------------------------------------------- sampling


def _manual_bilinear(image: torch.Tensor, x: float, y: float) -> torch.Tensor:
    """Textbook bilinear interpolation of a [C,H,W] image at a point inside it (pixel centres at ints)."""
    x0, y0 = math.floor(x), math.floor(y)
    x1, y1 = min(x0 + 1, image.shape[2] - 1), min(y0 + 1, image.shape[1] - 1)
    fx, fy = x - x0, y - y0
    top = (1 - fx) * image[:, y0, x0] + fx * image[:, y0, x1]
    bottom = (1 - fx) * image[:, y1, x0] + fx * image[:, y1, x1]
    return (1 - fy) * top + fy * bottom


def test_sample_features_at_points_is_bilinear_in_pixel_coordinates():
    torch.manual_seed(0)
    fmap = torch.randn(2, 5, 7, 9)
    points = torch.tensor([[[0.0, 0.0], [8.0, 6.0], [3.25, 2.5]], [[4.0, 1.0], [0.5, 5.75], [7.9, 0.1]]])
    sampled = sample_features_at_points(fmap, points)
    assert sampled.shape == (2, 3, 5)
    for b in range(2):
        for n in range(3):
            x, y = points[b, n].tolist()
            torch.testing.assert_close(sampled[b, n], _manual_bilinear(fmap[b], x, y), rtol=1e-5, atol=1e-5)


def test_sampling_padding_border_clamps_and_zeros_vanishes():
    fmap = torch.arange(12.0).view(1, 1, 3, 4)
    outside = torch.tensor([[[[-5.0, 1.0], [10.0, 20.0]]]])  # [1, 1, 2, 2]
    border = bilinear_sample(fmap, outside, padding_mode="border")
    torch.testing.assert_close(border.flatten(), torch.tensor([fmap[0, 0, 1, 0], fmap[0, 0, 2, 3]]))
    zeros = bilinear_sample(fmap, outside, padding_mode="zeros")
    assert torch.equal(zeros, torch.zeros_like(zeros))


# --------------------------------------------------------------------------------- embeddings


def test_sincos_pos_embed_2d_closed_form():
    channels, height, width = 12, 3, 5
    embed = sincos_pos_embed_2d(channels, height, width)
    assert embed.shape == (1, channels, height, width) and embed.dtype == torch.float32
    quarter = channels // 4
    for y in range(height):
        for x in range(width):
            expected = []
            for position in (x, y):  # first half encodes the column, second half the row
                freqs = [10000 ** (-k / quarter) for k in range(quarter)]
                expected += [math.sin(position * f) for f in freqs] + [math.cos(position * f) for f in freqs]
            torch.testing.assert_close(embed[0, :, y, x], torch.tensor(expected), rtol=0, atol=1e-6)


def test_sincos_pos_embed_2d_is_computed_in_float64():
    # At 388 channels and position 500, a float32 table would differ from the float64 one by ~1e-4.
    embed = sincos_pos_embed_2d(388, 1, 501)
    x = torch.tensor(500.0, dtype=torch.float64)
    k = torch.arange(97, dtype=torch.float64)
    exact = torch.cat([torch.sin(x / 10000 ** (k / 97)), torch.cos(x / 10000 ** (k / 97))]).float()
    assert torch.equal(embed[0, :194, 0, 500], exact)


def test_flow_embedding_interleaves_sin_cos_with_linear_frequencies():
    xy = torch.tensor([[[1.5, -0.25]]])
    channels = 8
    embed = flow_embedding_2d(xy, channels)
    assert embed.shape == (1, 1, 2 * channels)
    expected = []
    for value in (1.5, -0.25):
        for k in range(0, channels, 2):
            angle = value * k * 1000.0 / channels
            expected += [math.sin(angle), math.cos(angle)]
    torch.testing.assert_close(embed.flatten(), torch.tensor(expected), rtol=1e-5, atol=1e-5)
    # Official quirk: float32 frequencies and a float32 result even for float64 displacements.
    embed64 = flow_embedding_2d(xy.double(), channels)
    assert embed64.dtype == torch.float32
    torch.testing.assert_close(embed64.flatten(), torch.tensor(expected), rtol=0, atol=1e-7)


# --------------------------------------------------------------------------------- correlation


def test_correlation_pyramid_sizes_and_window_values():
    torch.manual_seed(0)
    batch, frames, channels, tracks, radius, levels = 1, 2, 8, 3, 2, 7
    fmaps = torch.randn(batch, frames, channels, 70, 70)
    pyramid = CorrelationPyramid(fmaps, num_levels=levels, radius=radius)
    assert [lvl.shape[-1] for lvl in pyramid.levels] == [70, 35, 17, 8, 4, 2, 1]
    torch.testing.assert_close(pyramid.levels[1][..., 0, 0], fmaps[..., :2, :2].mean(dim=(-1, -2)))

    feats = torch.randn(batch, frames, tracks, channels)
    coords = torch.tensor([[20.0, 30.0], [1.0, 0.0], [69.0, 12.0]]).expand(batch, frames, tracks, 2)
    out = pyramid.sample(feats, coords)
    side = 2 * radius + 1
    assert out.shape == (batch, frames, tracks, levels * side * side)

    window = out[..., : side * side].reshape(batch, frames, tracks, side, side)
    for n, (x, y) in enumerate([(20, 30), (1, 0), (69, 12)]):
        for i in range(side):  # first window index = x offset (official x-major layout)
            for j in range(side):
                xx, yy = x + i - radius, y + j - radius
                inside = 0 <= xx < 70 and 0 <= yy < 70
                expected = (
                    (feats[:, :, n] * fmaps[:, :, :, yy, xx]).sum(-1) / math.sqrt(channels)
                    if inside
                    else torch.zeros(batch, frames)
                )
                torch.testing.assert_close(window[:, :, n, i, j], expected, rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------------- attention blocks


def _zero_branches(block: torch.nn.Module) -> None:
    with torch.no_grad():
        for name, param in block.named_parameters():
            if "out_proj" in name or "mlp.fc2" in name:
                param.zero_()


def test_attn_blocks_residual_stream_starts_from_normalized_input():
    torch.manual_seed(0)
    x = torch.randn(2, 5, 16) * 3 + 1
    context = torch.randn(2, 4, 16)
    self_block, cross_block = AttnBlock(16, num_heads=4).eval(), CrossAttnBlock(16, num_heads=4).eval()
    for block in (self_block, cross_block):
        _zero_branches(block)
        with torch.no_grad():
            block.norm1.weight.uniform_(0.5, 1.5)
            block.norm1.bias.uniform_(-0.5, 0.5)
    with torch.no_grad():
        torch.testing.assert_close(self_block(x), self_block.norm1(x))
        torch.testing.assert_close(cross_block(x, context), cross_block.norm1(x))


def test_attn_block_full_formula():
    torch.manual_seed(0)
    block = AttnBlock(16, num_heads=4).eval()
    x = torch.randn(3, 6, 16)
    with torch.no_grad():
        n = block.norm1(x)
        q, k, v = (n @ block.attn.in_proj_weight.T + block.attn.in_proj_bias).chunk(3, dim=-1)
        heads = [slice(h * 4, (h + 1) * 4) for h in range(4)]
        attended = torch.cat(
            [torch.softmax(q[..., s] @ k[..., s].transpose(1, 2) / 2.0, dim=-1) @ v[..., s] for s in heads],
            -1,
        )
        h = n + block.attn.out_proj(attended)
        expected = h + block.mlp(block.norm2(h))
        torch.testing.assert_close(block(x), expected, rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------------- end to end


def _tiny_head(**overrides) -> TrackHead:
    kwargs = dict(
        dim_in=32,
        features=16,
        iters=3,
        hidden_size=32,
        depth=2,
        num_heads=4,
        num_virtual_tracks=4,
        out_channels=(8, 16, 32, 32),
        intermediate_layer_idx=(0, 1, 2, 3),
    )
    kwargs.update(overrides)
    return TrackHead(**kwargs).eval()


def _tiny_inputs(batch=2, frames=3, height=140, width=154, tracks=5):
    torch.manual_seed(1)
    patches = (height // 14) * (width // 14)
    tokens = [torch.randn(batch, frames, 5 + patches, 32) for _ in range(4)]
    images = torch.rand(batch, frames, 3, height, width)
    queries = torch.rand(batch, tracks, 2) * torch.tensor([width - 1.0, height - 1.0])
    return tokens, images, queries


def test_track_head_end_to_end_shapes_and_query_frame():
    torch.manual_seed(0)
    head = _tiny_head()
    with torch.no_grad():
        for p in head.tracker.parameters():  # make the updates visible
            p.add_(torch.randn_like(p) * 0.1)
    tokens, images, queries = _tiny_inputs()
    with torch.no_grad():
        coord_preds, vis, conf = head(tokens, images, 5, queries)
    assert len(coord_preds) == 3
    for coords in coord_preds:
        assert coords.shape == (2, 3, 5, 2)
        assert torch.isfinite(coords).all()
        torch.testing.assert_close(coords[:, 0], queries)  # frame 0 is pinned to the query
    assert not torch.allclose(coord_preds[-1][:, 1:], queries.unsqueeze(1).expand(-1, 2, -1, -1))
    assert vis.shape == conf.shape == (2, 3, 5)
    assert ((vis > 0) & (vis < 1)).all() and ((conf > 0) & (conf < 1)).all()
    with torch.no_grad():
        assert len(head(tokens, images, 5, queries, iters=1)[0]) == 1


def test_zero_flow_head_keeps_tracks_at_the_query():
    head = _tiny_head(predict_conf=False)
    with torch.no_grad():
        head.tracker.updateformer.flow_head.weight.zero_()
        head.tracker.updateformer.flow_head.bias.zero_()
    tokens, images, queries = _tiny_inputs(batch=1, frames=2, tracks=4)
    with torch.no_grad():
        coord_preds, vis, conf = head(tokens, images, 5, queries)
    assert conf is None and not hasattr(head.tracker, "conf_predictor")
    torch.testing.assert_close(coord_preds[-1], queries.unsqueeze(1).expand(-1, 2, -1, -1))
    assert vis.shape == (1, 2, 4)


def test_tracks_are_permutation_equivariant():
    head = _tiny_head()
    tokens, images, queries = _tiny_inputs(batch=1, frames=2, tracks=6)
    order = torch.tensor([3, 0, 5, 1, 4, 2])
    with torch.no_grad():
        coords, vis, conf = head(tokens, images, 5, queries)
        coords_p, vis_p, conf_p = head(tokens, images, 5, queries[:, order])
    torch.testing.assert_close(coords_p[-1], coords[-1][:, :, order], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(vis_p, vis[:, :, order], rtol=1e-4, atol=1e-4)


def test_too_small_images_are_rejected_clearly():
    head = _tiny_head()
    tokens, images, queries = _tiny_inputs(batch=1, frames=2, height=126, width=140, tracks=2)
    with pytest.raises(ValueError, match="too small"):
        head(tokens, images, 5, queries)
