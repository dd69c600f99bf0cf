"""Fisher-weighted clipping search: per output channel clip ratios that minimise block-OUTPUT error.

Why block output and not weight error: a weight error only matters through what it does to the activations
the tasks read. Each linear's quantization error is propagated to the block output with a Gauss-Newton
estimate: random probes ``v`` with ``E[v v^T] = diag(F)`` at the block output, back-propagated to the linear's
output, give per-token per-channel importances ``E[(J^T v)^2] = diag(J^T F J)``. Under that weighting the
error separates over the linear's output channels, so every channel picks its own ratio from a grid.
The chosen ratios are applied by pre-clamping weights (``pre_clip_weight``), which the export path's plain
max-abs int4 quantization then reproduces exactly.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .fisher import call_model, primary_tensor, resolve_modules
from .w4_transforms import fake_quantize_weight, pre_clip_weight

BlockCall = tuple[tuple[Any, ...], dict[str, Any]]
DEFAULT_CLIP_RATIOS: tuple[float, ...] = tuple(round(1.0 - 0.05 * i, 2) for i in range(11))  # 1.0 .. 0.5


def _detach(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, tuple):
        return tuple(_detach(v) for v in value)
    if isinstance(value, list):
        return [_detach(v) for v in value]
    if isinstance(value, dict):
        return {k: _detach(v) for k, v in value.items()}
    return value


def capture_block_inputs(
    model: nn.Module, block_modules: Sequence[nn.Module | str], samples: Iterable[Any]
) -> dict[str, list[BlockCall]]:
    """Record every call's (args, kwargs) of each block over the samples, for offline calibration."""
    blocks = resolve_modules(model, block_modules)
    calls: dict[str, list[BlockCall]] = {name: [] for name, _ in blocks}

    def make_hook(name: str) -> Any:
        def hook(_module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            calls[name].append((_detach(args), _detach(kwargs)))

        return hook

    handles = [m.register_forward_pre_hook(make_hook(n), with_kwargs=True) for n, m in blocks]
    try:
        with torch.no_grad():
            for sample in samples:
                call_model(model, sample)
    finally:
        for handle in handles:
            handle.remove()
    empty = [name for name, recorded in calls.items() if not recorded]
    if empty:
        raise ValueError(f"blocks never ran on the samples: {empty}")
    return calls


class BlockCalibration:
    """Calibration inputs per block: recorded ones, or samples re-run to capture one block at a time.

    Capturing lazily keeps only one block's inputs in memory (VGGT: ~45 MB per block per 8-frame sample
    instead of 48 times that) and, when called in block order during in-place edits, feeds each block the
    inputs produced by the already-edited blocks before it.
    """

    def __init__(
        self, model: nn.Module, calibration: Mapping[str, Sequence[BlockCall]] | Iterable[Any]
    ) -> None:
        self.model = model
        self.recorded = calibration if isinstance(calibration, Mapping) else None
        self.samples = None if isinstance(calibration, Mapping) else list(calibration)
        if self.samples is not None and not self.samples:
            raise ValueError("calibration samples are empty")

    def calls(self, name: str, block: nn.Module) -> Sequence[BlockCall]:
        if self.recorded is not None:
            if name not in self.recorded:
                raise ValueError(f"no calibration inputs recorded for block {name!r}")
            return self.recorded[name]
        return capture_block_inputs(self.model, [block], self.samples)[name]


def block_outputs(block: nn.Module, calls: Sequence[BlockCall]) -> list[torch.Tensor]:
    with torch.no_grad():
        return [primary_tensor(block(*args, **kwargs)).detach() for args, kwargs in calls]


def block_output_error(
    block: nn.Module,
    calls: Sequence[BlockCall],
    references: Sequence[torch.Tensor],
    channel_weights: torch.Tensor | None = None,
) -> tuple[float, float]:
    """(Fisher-weighted, unweighted) mean squared block-output error against float references."""
    weighted = unweighted = 0.0
    count = 0
    for out, ref in zip(block_outputs(block, calls), references, strict=True):
        squared = (out - ref).double().pow(2)
        unweighted += float(squared.sum())
        if channel_weights is not None:
            weighted += float((squared * channel_weights.to(squared.device, torch.float64)).sum())
        count += squared.numel()
    if channel_weights is None:
        weighted = unweighted
    return weighted / count, unweighted / count


@contextmanager
def swapped_weights(replacements: Mapping[nn.Linear, torch.Tensor]) -> Iterator[None]:
    """Temporarily give linears other weights (e.g. fake-quantized), restoring the originals afterwards."""
    originals = {linear: linear.weight.detach().clone() for linear in replacements}
    try:
        with torch.no_grad():
            for linear, weight in replacements.items():
                linear.weight.copy_(weight)
        yield
    finally:
        with torch.no_grad():
            for linear, weight in originals.items():
                linear.weight.copy_(weight)


def _frozen(module: nn.Module) -> list[tuple[nn.Parameter, bool]]:
    state = [(p, p.requires_grad) for p in module.parameters()]
    for p, _ in state:
        p.requires_grad_(False)
    return state


def linear_output_importance(
    block: nn.Module,
    linear: nn.Linear,
    calls: Sequence[BlockCall],
    channel_weights: torch.Tensor | None,
    *,
    probes: int = 8,
    seed: int = 0,
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per call: the linear's inputs [N, in] and the importance [N, out] of its output for the block output.

    importance = mean over Rademacher probes of (J^T (v * sqrt(F)))^2, an unbiased estimate of diag(J^T F J).
    """
    if probes < 1:
        raise ValueError(f"probes must be >= 1, got {probes}")
    generator = torch.Generator().manual_seed(seed)
    inputs: list[torch.Tensor] = []
    importances: list[torch.Tensor] = []
    holder: dict[str, torch.Tensor] = {}

    def hook(_module: nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> torch.Tensor:
        if "out" in holder:
            raise ValueError("the linear ran more than once in one block call; cannot attribute its error")
        holder["in"] = args[0].detach().reshape(-1, linear.in_features)
        leaf = output.detach().requires_grad_(True)
        holder["out"] = leaf
        return leaf

    state = _frozen(block)
    handle = linear.register_forward_hook(hook)
    try:
        with torch.enable_grad():
            for args, kwargs in calls:
                holder.clear()
                out = primary_tensor(block(*args, **kwargs))
                if "out" not in holder:
                    raise ValueError("the linear did not run inside the block")
                leaf = holder["out"]
                sqrt_w = (
                    channel_weights.to(out.device, out.dtype).sqrt() if channel_weights is not None else None
                )
                total = torch.zeros_like(leaf)
                for p in range(probes):
                    signs = (
                        torch.randint(0, 2, out.shape, generator=generator).to(out.device, out.dtype) * 2 - 1
                    )
                    probe = signs * sqrt_w if sqrt_w is not None else signs
                    (grad,) = torch.autograd.grad(
                        out, leaf, probe, retain_graph=p + 1 < probes, allow_unused=True
                    )
                    if grad is not None:
                        total += grad.pow(2)
                inputs.append(holder["in"])
                importances.append((total / probes).reshape(-1, linear.out_features))
    finally:
        handle.remove()
        for p, requires_grad in state:
            p.requires_grad_(requires_grad)
    return inputs, importances


def search_linear_clip_ratios(
    block: nn.Module,
    linear: nn.Linear,
    calls: Sequence[BlockCall],
    channel_weights: torch.Tensor | None = None,
    *,
    bits: int = 4,
    group_size: int | None = None,
    ratios: Sequence[float] = DEFAULT_CLIP_RATIOS,
    probes: int = 8,
    seed: int = 0,
) -> torch.Tensor:
    """Per output channel clip ratio [out] minimising the importance-weighted output error over the grid."""
    if not ratios or any(not 0.0 < r <= 1.0 for r in ratios):
        raise ValueError(f"ratios must be a non-empty grid inside (0, 1], got {list(ratios)}")
    grid = sorted(set(ratios), reverse=True)  # 1.0 first: ties keep the unclipped scale
    inputs, importances = linear_output_importance(
        block, linear, calls, channel_weights, probes=probes, seed=seed
    )
    weight = linear.weight.detach()
    errors = torch.zeros(len(grid), linear.out_features, dtype=torch.float64)
    for k, ratio in enumerate(grid):
        delta = fake_quantize_weight(weight, bits, group_size, ratio) - weight
        for x, importance in zip(inputs, importances, strict=True):
            errors[k] += (importance * (x @ delta.T).pow(2)).double().sum(dim=0).cpu()
    best = errors.argmin(dim=0)
    return torch.tensor(grid, dtype=weight.dtype)[best].to(weight.device)


@dataclass
class BlockClipping:
    ratios: dict[str, torch.Tensor]
    rtn_error: float
    clipped_error: float
    kept: bool


@dataclass
class ClippingReport:
    """Per block: chosen ratios per linear and Fisher-weighted output error of plain RTN vs clipped."""

    blocks: dict[str, BlockClipping] = field(default_factory=dict)

    @property
    def rtn_error(self) -> float:
        return sum(b.rtn_error for b in self.blocks.values())

    @property
    def clipped_error(self) -> float:
        return sum(b.clipped_error if b.kept else b.rtn_error for b in self.blocks.values())

    def clip_ratios(self) -> dict[str, torch.Tensor]:
        return {name: r for b in self.blocks.values() if b.kept for name, r in b.ratios.items()}


def block_linears(block: nn.Module, block_name: str) -> dict[str, nn.Linear]:
    """Every nn.Linear inside a block, by full model name."""
    prefix = f"{block_name}." if block_name else ""
    return {prefix + n: m for n, m in block.named_modules() if isinstance(m, nn.Linear)}


def apply_fisher_clipping(
    model: nn.Module,
    block_modules: Sequence[nn.Module | str],
    calibration: Mapping[str, Sequence[BlockCall]] | Iterable[Any],
    channel_weights: torch.Tensor | None = None,
    *,
    linears: Mapping[str, Sequence[str]] | None = None,
    bits: int = 4,
    group_size: int | None = None,
    ratios: Sequence[float] = DEFAULT_CLIP_RATIOS,
    probes: int = 8,
    seed: int = 0,
) -> ClippingReport:
    """Search clip ratios for each block's linears and pre-clamp their float weights in place.

    ``calibration`` is either the output of ``capture_block_inputs`` or samples, captured one block at a time
    (after the earlier blocks were clipped; see ``BlockCalibration``).
    ``channel_weights`` is [L, C] (e.g. ``FisherStats.combined_weights()``) or None for plain MSE.
    ``linears`` maps block name -> linear names to treat (default: all nn.Linear in the block).
    A block whose clipped weights measure worse than RTN on the calibration set keeps its weights untouched.
    """
    blocks = resolve_modules(model, block_modules)
    source = BlockCalibration(model, calibration)
    if channel_weights is not None and channel_weights.shape[0] != len(blocks):
        raise ValueError(f"channel_weights has {channel_weights.shape[0]} rows for {len(blocks)} blocks")
    report = ClippingReport()
    for index, (block_name, block) in enumerate(blocks):
        calls = source.calls(block_name, block)
        weights = channel_weights[index] if channel_weights is not None else None
        all_linears = block_linears(block, block_name)
        names = (
            list(linears[block_name]) if linears is not None and block_name in linears else list(all_linears)
        )
        unknown = [n for n in names if n not in all_linears]
        if unknown:
            raise ValueError(f"block {block_name!r} has no linears named {unknown}")
        chosen = {
            name: search_linear_clip_ratios(
                block,
                all_linears[name],
                calls,
                weights,
                bits=bits,
                group_size=group_size,
                ratios=ratios,
                probes=probes,
                seed=seed,
            )
            for name in names
        }
        references = block_outputs(block, calls)
        rtn = {all_linears[n]: fake_quantize_weight(all_linears[n].weight, bits, group_size) for n in names}
        with swapped_weights(rtn):
            rtn_error = block_output_error(block, calls, references, weights)[0]
        clipped = {
            all_linears[n]: fake_quantize_weight(all_linears[n].weight, bits, group_size, chosen[n])
            for n in names
        }
        with swapped_weights(clipped):
            clipped_error = block_output_error(block, calls, references, weights)[0]
        kept = clipped_error < rtn_error
        if kept:
            with torch.no_grad():
                for name in names:
                    linear = all_linears[name]
                    linear.weight.copy_(pre_clip_weight(linear.weight, chosen[name], group_size))
        report.blocks[block_name] = BlockClipping(chosen, rtn_error, clipped_error, kept)
    return report
