"""Head activations, the DPT pieces and the camera head's refinement, against closed forms."""

from __future__ import annotations

import math

import torch
from torch import nn

from vggt_et.model.activations import activate_head, activate_pose
from vggt_et.model.camera_head import CameraHead
from vggt_et.model.dpt_head import ResidualConvUnit, add_pos_embed, grid_to_embed, sincos_embed_1d, uv_grid


def test_depth_and_point_activations() -> None:
    out = torch.tensor([0.5, -2.0, 1.0, 0.3]).view(1, 4, 1, 1)  # 3 values + confidence
    depth, conf = activate_head(out, "exp", "expp1")
    torch.testing.assert_close(depth.flatten(), torch.exp(torch.tensor([0.5, -2.0, 1.0])))
    torch.testing.assert_close(conf.flatten(), torch.tensor([1 + math.exp(0.3)]))
    points, _ = activate_head(out, "inv_log", "expp1")
    expected = [math.expm1(0.5), -math.expm1(2.0), math.expm1(1.0)]
    torch.testing.assert_close(points.flatten(), torch.tensor(expected))
    assert points.shape == (1, 1, 1, 3) and conf.shape == (1, 1, 1)


def test_pose_activation_relu_only_on_fov() -> None:
    pred = torch.tensor([-1.0, 2, -3, -0.5, 0.5, -0.25, 0.1, -0.7, 0.9])
    expected = torch.tensor([-1.0, 2, -3, -0.5, 0.5, -0.25, 0.1, 0.0, 0.9])
    assert torch.equal(activate_pose(pred), expected)


def test_residual_unit_adds_relu_of_input_like_the_inplace_original() -> None:
    """The official unit uses ReLU(inplace=True), which overwrites its input before the skip add."""
    torch.manual_seed(0)
    unit = ResidualConvUnit(4)
    x = torch.randn(1, 4, 5, 5)

    def official_style(inp: torch.Tensor) -> torch.Tensor:
        act = nn.ReLU(inplace=True)
        out = act(inp)
        out = unit.conv1(out)
        out = act(out)
        out = unit.conv2(out)
        return out + inp  # `inp` was modified in place by the first activation

    expected = official_style(x.clone())
    torch.testing.assert_close(unit(x), expected)
    assert not torch.allclose(unit(x), unit.conv2(torch.relu(unit.conv1(torch.relu(x)))) + x)


def test_uv_grid_spans_unit_diagonal_box() -> None:
    grid = uv_grid(width=4, height=2, aspect_ratio=2.0, dtype=torch.float32, device=torch.device("cpu"))
    sx, sy = 2 / math.sqrt(5), 1 / math.sqrt(5)
    assert grid.shape == (2, 4, 2)
    torch.testing.assert_close(grid[0, :, 0], torch.linspace(-sx * 3 / 4, sx * 3 / 4, 4))
    torch.testing.assert_close(grid[:, 0, 1], torch.tensor([-sy / 2, sy / 2]))


def test_sincos_embedding_closed_form_in_float64() -> None:
    pos = torch.tensor([0.3, -0.7])
    emb = sincos_embed_1d(8, pos)
    omega = [100.0 ** (-j / 4) for j in range(4)]
    for n, p in enumerate([0.3, -0.7]):
        p = float(torch.tensor(p, dtype=torch.float32))
        expected = [math.sin(p * w) for w in omega] + [math.cos(p * w) for w in omega]
        torch.testing.assert_close(emb[n], torch.tensor(expected), atol=1e-7, rtol=0)
    full = grid_to_embed(torch.stack([pos, pos.flip(0)], dim=-1).view(1, 2, 2), 16)
    torch.testing.assert_close(full[0, 0, :8], emb[0])  # first half encodes u
    torch.testing.assert_close(full[0, 0, 8:], emb[1])  # second half encodes v


def test_dpt_pos_embed_is_added_at_one_tenth() -> None:
    x = torch.zeros(2, 8, 3, 5)
    out = add_pos_embed(x, image_width=70, image_height=42)
    grid = uv_grid(5, 3, 70 / 42, torch.float32, torch.device("cpu"))
    torch.testing.assert_close(out[1], 0.1 * grid_to_embed(grid, 8).permute(2, 0, 1))


def test_camera_head_accumulates_raw_deltas_over_iterations() -> None:
    torch.manual_seed(0)
    head = CameraHead(dim_in=16, trunk_depth=1, num_heads=2, num_iterations=3)
    bias = torch.tensor([0.1, -0.2, 0.3, 0.0, 0.0, 0.0, 1.0, -0.4, 0.2])
    with torch.no_grad():
        head.pose_branch.fc2.weight.zero_()
        head.pose_branch.fc2.bias.copy_(bias)
    tokens = [torch.randn(2, 3, 7, 16)]
    preds = head(tokens)
    assert len(preds) == 3
    for k, pred in enumerate(preds, start=1):
        raw = k * bias
        expected = torch.cat([raw[:7], raw[7:].clamp(min=0)])
        torch.testing.assert_close(pred, expected.expand(2, 3, 9))
