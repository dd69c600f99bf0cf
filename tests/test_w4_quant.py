"""Fake-quant primitives: torchao-compatible symmetric grid, grouping, pre-clipping, sizes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vggt_et.quantizers.w4_transforms import (
    fake_quantize_activation_per_token,
    fake_quantize_linears,
    fake_quantize_weight,
    pre_clip_weight,
    quantization_scales,
    weight_storage_bytes,
)


def test_int4_per_channel_grid_matches_torchao_symmetric_rule() -> None:
    weight = torch.tensor([[-3.0, 1.0, 0.2, 1.5], [0.5, -0.25, 0.1, 0.0]])
    scales = quantization_scales(weight, bits=4)
    torch.testing.assert_close(scales, torch.tensor([[3.0 / 7.5], [0.5 / 7.5]]))
    q = fake_quantize_weight(weight, bits=4)
    levels = q / scales
    assert torch.equal(levels, levels.round())
    assert float(levels.min()) >= -8 and float(levels.max()) <= 7
    # -amax is level -7.5, which rounds (half to even) to -8, as in torchao; +amax clamps to 7.
    torch.testing.assert_close(q[0, 0], torch.tensor(-8 * 3.0 / 7.5))
    assert float((q - weight).abs().max()) <= float(scales.max()) / 2 + 1e-6


def test_groups_have_their_own_scales() -> None:
    weight = torch.cat([torch.full((2, 4), 0.01), torch.full((2, 4), 10.0)], dim=1)
    weight[:, 0] = 0.02
    per_group = fake_quantize_weight(weight, bits=4, group_size=4)
    per_channel = fake_quantize_weight(weight, bits=4)
    assert quantization_scales(weight, 4, 4).shape == (2, 2)
    assert float((per_group[:, :4] - weight[:, :4]).abs().max()) <= 0.02 / 7.5 / 2 + 1e-7
    assert float(per_channel[:, :4].abs().max()) == 0.0  # small group crushed by the big one's scale


def test_pre_clipping_reproduces_the_clipped_scale() -> None:
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(8, 64, generator=generator) ** 3
    ratios = torch.linspace(0.5, 1.0, 8)
    for group in (None, 16):
        clipped = pre_clip_weight(weight, ratios, group)
        # The lowering recomputes max-abs scales from the clamped weight: identical to the searched ones.
        assert torch.equal(
            quantization_scales(clipped, 4, group), quantization_scales(weight, 4, group, ratios)
        )
        limits = quantization_scales(weight, 4, group, ratios) * 7.5
        grouped = clipped.reshape(8, limits.shape[1], -1)
        assert bool((grouped.abs() <= limits.unsqueeze(-1) * (1 + 1e-6)).all())
        direct = fake_quantize_weight(weight, 4, group, ratios)
        torch.testing.assert_close(fake_quantize_weight(clipped, 4, group), direct, rtol=0, atol=0)
        assert not torch.equal(direct, fake_quantize_weight(weight, 4, group))
        # Inside the clip range, values land on the finer grid: error at most half of the clipped step.
        inside = (weight.reshape_as(grouped).abs() < limits.unsqueeze(-1)).reshape_as(weight)
        step = quantization_scales(weight, 4, group, ratios).repeat_interleave(64 // limits.shape[1], dim=1)
        assert bool(((direct - weight).abs()[inside] <= step[inside] / 2 + 1e-5).all())


def test_activation_per_token_and_storage() -> None:
    x = torch.tensor([[1.0, -0.5, 0.25], [100.0, 1.0, 0.0]])
    q = fake_quantize_activation_per_token(x, 8)
    assert float((q - x).abs()[0].max()) <= 1.0 / 127.5 / 2 + 1e-7
    assert weight_storage_bytes(16, 64, 4, 32) == 16 * 64 // 2 + 16 * 2 * 4
    assert weight_storage_bytes(16, 64, 8, 32) == 16 * 64 + 16 * 4


def test_fake_quantize_linears_in_place_and_report() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 8))
    original = model[0].weight.detach().clone()
    report = fake_quantize_linears(model, {"0": 4, "2": 8}, group_size=16)
    torch.testing.assert_close(model[0].weight.detach(), fake_quantize_weight(original, 4, 16))
    assert report.bits == {"0": 4, "2": 8}
    assert report.total_bytes == weight_storage_bytes(16, 32, 4, 16) + weight_storage_bytes(8, 16, 8, None)
    with pytest.raises(ValueError, match="not an nn.Linear"):
        fake_quantize_linears(model, {"1": 4})


def test_bad_arguments() -> None:
    weight = torch.randn(4, 12)
    with pytest.raises(ValueError, match="divide"):
        fake_quantize_weight(weight, 4, group_size=5)
    with pytest.raises(ValueError, match="bits"):
        fake_quantize_weight(weight, 5)
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        fake_quantize_weight(weight, 4, clip_ratio=1.5)
    with pytest.raises(ValueError, match="scalar"):
        pre_clip_weight(weight, torch.ones(3))
    with pytest.raises(ValueError, match="2-D"):
        fake_quantize_weight(torch.randn(4), 4)


@pytest.mark.parametrize("group_size", [32, None])
def test_pre_clipped_weights_match_torchao_int4_bit_for_bit(group_size) -> None:
    """The export path (torchao Int8DynamicActivationIntxWeightConfig) lands on exactly our grid."""
    from torchao.quantization import Int8DynamicActivationIntxWeightConfig, quantize_
    from torchao.quantization.granularity import PerAxis, PerGroup

    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(64, 128, generator=generator) ** 3
    ratios = torch.rand(64, generator=generator) * 0.5 + 0.5
    clipped = pre_clip_weight(weight, ratios, group_size)
    linear = nn.Linear(128, 64, bias=False)
    linear.weight = nn.Parameter(clipped.clone(), requires_grad=False)
    granularity = PerGroup(group_size) if group_size else PerAxis(0)
    quantize_(
        linear, Int8DynamicActivationIntxWeightConfig(weight_dtype=torch.int4, weight_granularity=granularity)
    )
    torch.testing.assert_close(
        linear.weight.dequantize(), fake_quantize_weight(weight, 4, group_size, ratios), rtol=0, atol=0
    )
