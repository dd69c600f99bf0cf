"""Mixed W4/W8 bit allocation: keep the most Fisher-sensitive linears in 8 bit within a parameter budget.

Why: a handful of layers usually carry most of the int4 damage. Each eligible linear is quantized alone (the
rest float) and the Fisher-weighted block-output error it causes at 4 and at 8 bits is measured on calibration
inputs; the extra error of 4 over 8 bits per parameter ranks layers, and the highest stay 8-bit until the
8-bit share of eligible parameters would exceed ``1 - w4_budget`` (greedy knapsack: the better of ranking by
saved error per parameter and by saved error).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from vggt_et.utils.tables import format_table

from .clipping import (
    BlockCalibration,
    BlockCall,
    block_linears,
    block_output_error,
    block_outputs,
    swapped_weights,
)
from .fisher import resolve_modules
from .w4_transforms import fake_quantize_weight, weight_storage_bytes


@dataclass
class LayerSensitivity:
    """Fisher-weighted block-output error with only this layer quantized (times the block's importance)."""

    block: str
    params: int
    w4_error: float
    w8_error: float
    w4_bytes: int
    w8_bytes: int

    @property
    def cost_per_param(self) -> float:
        return max(self.w4_error - self.w8_error, 0.0) / self.params


def measure_layer_sensitivity(
    model: nn.Module,
    block_modules: Sequence[nn.Module | str],
    calibration: Mapping[str, Sequence[BlockCall]] | Iterable[Any],
    channel_weights: torch.Tensor | None = None,
    *,
    block_importance: torch.Tensor | None = None,
    linears: Mapping[str, Sequence[str]] | None = None,
    group_size: int | None = None,
    scale_bytes: int = 4,
) -> dict[str, LayerSensitivity]:
    """Per eligible linear: block-output error when it alone is int4 (grouped) or int8 (per channel).

    ``block_importance`` [L] scales each block's errors so blocks compare (e.g.
    ``FisherStats.block_importance()``); without it every block counts equally (FGQ's per-block norm).
    """
    blocks = resolve_modules(model, block_modules)
    source = BlockCalibration(model, calibration)
    if block_importance is not None and block_importance.shape != (len(blocks),):
        raise ValueError(
            f"block_importance must have shape [{len(blocks)}], got {tuple(block_importance.shape)}"
        )
    result: dict[str, LayerSensitivity] = {}
    for index, (block_name, block) in enumerate(blocks):
        calls = source.calls(block_name, block)
        weights = channel_weights[index] if channel_weights is not None else None
        scale = float(block_importance[index]) if block_importance is not None else 1.0
        available = block_linears(block, block_name)
        names = (
            list(linears[block_name]) if linears is not None and block_name in linears else list(available)
        )
        unknown = [n for n in names if n not in available]
        if unknown:
            raise ValueError(f"block {block_name!r} has no linears named {unknown}")
        references = block_outputs(block, calls)
        for name in names:
            linear = available[name]
            errors = {}
            for bits, groups in ((4, group_size), (8, None)):
                with swapped_weights({linear: fake_quantize_weight(linear.weight, bits, groups)}):
                    errors[bits] = block_output_error(block, calls, references, weights)[0] * scale
            out_f, in_f = linear.weight.shape
            result[name] = LayerSensitivity(
                block=block_name,
                params=linear.weight.numel(),
                w4_error=errors[4],
                w8_error=errors[8],
                w4_bytes=weight_storage_bytes(out_f, in_f, 4, group_size, scale_bytes),
                w8_bytes=weight_storage_bytes(out_f, in_f, 8, None, scale_bytes),
            )
    return result


def allocate_bits(sensitivities: Mapping[str, LayerSensitivity], w4_budget: float = 0.9) -> dict[str, int]:
    """{layer: 4 or 8}: at least ``w4_budget`` of the eligible parameters end up in 4 bit."""
    if not 0.0 <= w4_budget <= 1.0:
        raise ValueError(f"w4_budget must lie in [0, 1], got {w4_budget}")
    if not sensitivities:
        raise ValueError("no layers to allocate bits to")
    total = sum(s.params for s in sensitivities.values())
    allowance = (1.0 - w4_budget) * total + 1e-9 * total  # tolerance: (1 - 0.9) * 1000 < 100 in floats

    def greedy(order: list[str]) -> tuple[float, dict[str, int]]:
        plan, spent, gain = dict.fromkeys(sensitivities, 4), 0, 0.0
        for name in order:
            layer = sensitivities[name]
            if layer.cost_per_param > 0 and spent + layer.params <= allowance:
                plan[name], spent, gain = 8, spent + layer.params, gain + layer.cost_per_param * layer.params
        return gain, plan

    # Knapsack heuristic: best of "most error saved per parameter first" and "most error saved first".
    by_density = sorted(sensitivities, key=lambda n: sensitivities[n].cost_per_param, reverse=True)
    by_gain = sorted(sensitivities, key=lambda n: sensitivities[n].cost_per_param * sensitivities[n].params)
    candidates = [greedy(by_density), greedy(by_gain[::-1])]
    return max(candidates, key=lambda candidate: candidate[0])[1]


@dataclass
class MixedPrecisionReport:
    """The plan, the per-layer measurements behind it, and the per-block error and size once applied."""

    plan: dict[str, int]
    layers: dict[str, LayerSensitivity]
    block_errors: dict[str, tuple[float, float]] = field(default_factory=dict)
    size_bytes: int = 0
    all_w4_bytes: int = 0

    @property
    def w4_fraction(self) -> float:
        total = sum(s.params for s in self.layers.values())
        return sum(s.params for n, s in self.layers.items() if self.plan[n] == 4) / total

    def table(self) -> str:
        """Per layer: bits and errors; per block: errors; then the size against all-W4."""
        layers = format_table(
            ["layer", "bits", "params", "w4_err", "w8_err"],
            [(name, self.plan[name], s.params, s.w4_error, s.w8_error) for name, s in self.layers.items()],
            [None, "d", "d", ".3e", ".3e"],
        )
        blocks = format_table(
            ["block", "weighted_err", "unweighted_err"],
            [(name, *errors) for name, errors in self.block_errors.items()],
            [None, ".3e", ".3e"],
        )
        size = f"size {self.size_bytes} B (all-W4 {self.all_w4_bytes} B), W4 share {self.w4_fraction:.3f}"
        return f"{layers}\n{blocks}\n{size}"


def plan_mixed_precision(
    model: nn.Module,
    block_modules: Sequence[nn.Module | str],
    calibration: Mapping[str, Sequence[BlockCall]] | Iterable[Any],
    channel_weights: torch.Tensor | None = None,
    *,
    w4_budget: float = 0.9,
    block_importance: torch.Tensor | None = None,
    linears: Mapping[str, Sequence[str]] | None = None,
    group_size: int | None = None,
    scale_bytes: int = 4,
) -> MixedPrecisionReport:
    """Measure, allocate, then measure each block with the whole plan applied. The model is left unchanged."""
    blocks = resolve_modules(model, block_modules)
    source = BlockCalibration(model, calibration)
    layers = measure_layer_sensitivity(
        model,
        [m for _, m in blocks],
        source.recorded if source.recorded is not None else source.samples,
        channel_weights,
        block_importance=block_importance,
        linears=linears,
        group_size=group_size,
        scale_bytes=scale_bytes,
    )
    plan = allocate_bits(layers, w4_budget)
    report = MixedPrecisionReport(plan=plan, layers=layers)
    modules = dict(model.named_modules())
    for index, (block_name, block) in enumerate(blocks):
        calls = source.calls(block_name, block)
        weights = channel_weights[index] if channel_weights is not None else None
        members = [n for n, s in layers.items() if s.block == block_name]
        quantized = {
            modules[n]: fake_quantize_weight(modules[n].weight, plan[n], group_size if plan[n] == 4 else None)
            for n in members
        }
        references = block_outputs(block, calls)
        with swapped_weights(quantized):
            report.block_errors[block_name] = block_output_error(block, calls, references, weights)
    report.size_bytes = sum(s.w4_bytes if plan[n] == 4 else s.w8_bytes for n, s in layers.items())
    report.all_w4_bytes = sum(s.w4_bytes for s in layers.values())
    return report
