"""Fisher-weighted clipping search and mixed-precision allocation on a small outlier transformer."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from toy_outliers import make_outlier_transformer, toy_samples, toy_tasks

from vggt_et.quantizers.clipping import (
    apply_fisher_clipping,
    block_linears,
    block_output_error,
    block_outputs,
    capture_block_inputs,
    search_linear_clip_ratios,
    swapped_weights,
)
from vggt_et.quantizers.fisher import compute_block_fisher
from vggt_et.quantizers.mixed_precision import LayerSensitivity, allocate_bits, plan_mixed_precision
from vggt_et.quantizers.w4_transforms import fake_quantize_weight, weight_storage_bytes

pytestmark = pytest.mark.usefixtures("one_thread")


GROUP = 16


@pytest.fixture(scope="module")
def setup():
    model = make_outlier_transformer(seed=3, dim=64, depth=2)
    blocks = list(model.blocks)
    calibration = toy_samples(3, seed=7)
    stats = compute_block_fisher(model, blocks, toy_tasks(), calibration, progress=False)
    calls = capture_block_inputs(model, blocks, calibration)
    return model, blocks, calls, stats.combined_weights(), stats.block_importance()


def _weighted_error(block, name_prefix, calls, weights, references, quantized_from) -> float:
    """Fisher-weighted block-output error when every linear of the block is plain-RTN quantized."""
    linears = block_linears(block, name_prefix)
    replacements = {m: fake_quantize_weight(quantized_from[n], 4, GROUP) for n, m in linears.items()}
    with swapped_weights(replacements):
        return block_output_error(block, calls, references, weights)[0]


def test_fisher_clipping_beats_round_to_nearest(setup) -> None:
    model, blocks, calls, weights, _ = setup
    clipped_model = copy.deepcopy(model)
    clipped_blocks = list(clipped_model.blocks)
    originals = {
        n: m.weight.detach().clone() for n, m in clipped_model.named_modules() if isinstance(m, nn.Linear)
    }
    report = apply_fisher_clipping(clipped_model, clipped_blocks, calls, weights, group_size=GROUP, probes=4)
    assert set(report.blocks) == {"blocks.0", "blocks.1"}
    for index, block in enumerate(clipped_blocks):
        name = f"blocks.{index}"
        references = block_outputs(blocks[index], calls[name])  # the float model's block outputs
        # Measured independently: plain RTN of the pre-clipped weights (as exported) vs of the originals.
        rtn = _weighted_error(block, name, calls[name], weights[index], references, originals)
        current = {n: m.weight.detach().clone() for n, m in block_linears(block, name).items()}
        searched = _weighted_error(block, name, calls[name], weights[index], references, current)
        assert searched < rtn, (name, searched, rtn)
        assert report.blocks[name].kept
        assert report.blocks[name].clipped_error == pytest.approx(searched, rel=1e-4)
        assert report.blocks[name].rtn_error == pytest.approx(rtn, rel=1e-4)
        ratios = report.blocks[name].ratios[f"{name}.mlp.fc1"]
        assert ratios.shape == (256,) and float(ratios.min()) >= 0.5 and float(ratios.max()) <= 1.0
        assert float(ratios.min()) < 1.0  # some channel actually clipped
    assert report.clipped_error < report.rtn_error
    expected_names = {n for i in range(2) for n in block_linears(clipped_blocks[i], f"blocks.{i}")}
    assert set(report.clip_ratios()) == expected_names


def test_fisher_weights_steer_the_search(setup) -> None:
    model, blocks, calls, weights, _ = setup
    block = blocks[1]
    fc2 = block.mlp.fc2
    # fc2 writes straight into the block output: channels with Fisher weight 0 get no say, so they keep 1.0.
    muted = torch.ones(64)
    muted[:32] = 0.0
    ratios = search_linear_clip_ratios(block, fc2, calls["blocks.1"], muted, group_size=GROUP, probes=2)
    assert bool((ratios[:32] == 1.0).all())
    assert float(ratios[32:].min()) < 1.0


def test_allocate_bits_respects_budget_and_ranks_by_sensitivity() -> None:
    def layer(params: int, w4: float) -> LayerSensitivity:
        return LayerSensitivity("b", params, w4, 0.0, params // 2, params)

    layers = {"big_sensitive": layer(500, 50.0), "small_hot": layer(100, 30.0), "cold": layer(400, 0.1)}
    assert allocate_bits(layers, 0.9) == {"big_sensitive": 4, "small_hot": 8, "cold": 4}
    assert allocate_bits(layers, 0.5) == {"big_sensitive": 8, "small_hot": 4, "cold": 4}
    assert allocate_bits(layers, 1.0) == dict.fromkeys(layers, 4)
    assert allocate_bits(layers, 0.0) == dict.fromkeys(layers, 8)
    with pytest.raises(ValueError, match="w4_budget"):
        allocate_bits(layers, 1.5)


def test_mixed_precision_plan_report(setup) -> None:
    model, blocks, calls, weights, importance = setup
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    report = plan_mixed_precision(
        model, blocks, calls, weights, w4_budget=0.9, block_importance=importance, group_size=GROUP
    )
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())  # model untouched
    assert set(report.plan.values()) <= {4, 8} and 8 in report.plan.values()
    assert report.w4_fraction >= 0.9
    assert report.size_bytes > report.all_w4_bytes
    expected = sum(
        weight_storage_bytes(*model.get_submodule(n).weight.shape, bits, GROUP if bits == 4 else None)
        for n, bits in report.plan.items()
    )
    assert report.size_bytes == expected
    # The 8-bit layers are the ones with the highest extra int4 error per parameter.
    ranked = sorted(report.layers, key=lambda n: report.layers[n].cost_per_param, reverse=True)
    assert report.plan[ranked[0]] == 8
    assert set(report.block_errors) == {"blocks.0", "blocks.1"}
    assert "W4 share" in report.table()


class KwargBlock(nn.Module):
    """Like VGGT blocks: keyword inputs (positions) and, here, a tuple output."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, 2 * dim)
        self.fc2 = nn.Linear(2 * dim, dim)

    def forward(self, x: torch.Tensor, *, pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = x + self.fc2(torch.nn.functional.gelu(self.fc1(self.norm(x + pos))))
        return out, pos


class KwargModel(nn.Module):
    def __init__(self, dim: int = 32) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.blocks = nn.ModuleList([KwargBlock(dim) for _ in range(2)])
        self.head = nn.Linear(dim, 3)

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x, pos = block(x, pos=pos)
        return self.head(x)


def test_keyword_inputs_tuple_outputs_and_lazy_capture() -> None:
    model = KwargModel()
    generator = torch.Generator().manual_seed(4)
    samples = [
        (torch.randn(2, 8, 32, generator=generator) ** 3, torch.randn(2, 8, 32, generator=generator))
        for _ in range(2)
    ]
    stats = compute_block_fisher(
        model, ["blocks.0", "blocks.1"], {"out": lambda y: y}, samples, progress=False
    )
    assert stats.raw.shape == (1, 2, 32) and bool((stats.raw > 0).all())
    calls = capture_block_inputs(model, list(model.blocks), samples)
    assert "pos" in calls["blocks.0"][0][1] and len(calls["blocks.1"]) == 2
    weights = stats.combined_weights()
    recorded = plan_mixed_precision(
        model, list(model.blocks), calls, weights, w4_budget=0.5, group_size=GROUP
    )
    lazy = plan_mixed_precision(model, list(model.blocks), samples, weights, w4_budget=0.5, group_size=GROUP)
    assert recorded.plan == lazy.plan and recorded.block_errors == lazy.block_errors
    report = apply_fisher_clipping(model, list(model.blocks), samples, weights, group_size=GROUP, probes=2)
    assert report.clipped_error < report.rtn_error
