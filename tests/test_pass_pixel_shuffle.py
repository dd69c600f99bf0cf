"""The pixel-shuffle pass on a toy depth-to-space decoder: same values, rank-4 layout ops only (to_edge's
own decomposition is 6-D), and the XNNPACK list lowers it as one delegate."""

from __future__ import annotations

import torch
from torch import nn

import vggt_et.passes as P
from vggt_et.passes.audit import max_compute_rank
from vggt_et.passes.graph_utils import copy_program

aten = torch.ops.aten


class ToyDepthToSpace(nn.Module):
    """conv → pixel shuffle ×4 → exp: a sub-pixel upsampling head."""

    def __init__(self, channels: int = 8, out_channels: int = 2, factor: int = 4) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, out_channels * factor * factor, kernel_size=1)
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.exp(nn.functional.pixel_shuffle(self.conv(x), self.factor))


def _export(model: nn.Module, x: torch.Tensor) -> torch.export.ExportedProgram:
    with torch.no_grad():
        return torch.export.export(model.eval(), (x,))


def test_pass_keeps_values_and_rank_four() -> None:
    torch.manual_seed(0)
    model, x = ToyDepthToSpace(), torch.randn(2, 8, 5, 7)  # two output channels: C > 1 case
    ep, rewrites = P.decompose_pixel_shuffle(copy_program(_export(model, x)))
    assert rewrites == 1
    assert not ep.graph.find_nodes(op="call_function", target=aten.pixel_shuffle.default)
    assert max_compute_rank(ep.graph) <= 4
    assert torch.equal(ep.module()(x), model(x))


def test_xnnpack_list_lowers_pixel_shuffle_as_one_delegate() -> None:
    torch.manual_seed(0)
    model, x = ToyDepthToSpace(out_channels=1), torch.randn(1, 8, 4, 6)
    report = P.audit_program(_export(model, x), "xnnpack", progress=False)["after"]
    assert report["delegate_segments"] == 1 and report["non_delegated"] == {}, report
