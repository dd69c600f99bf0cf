"""Fisher-weighted clipping search: per output channel clip ratios that minimise block-OUTPUT error.

Why block output and not weight error: a weight error only matters through what it does to the activations
the tasks read. Each linear's quantization error is propagated to the block output with a Gauss-Newton
estimate: random probes ``v`` with ``E[v v^T] = diag(F)`` at the block output, back-propagated to the linear's
output, give per-token per-channel importances ``E[(J^T v)^2] = diag(J^T F J)``. Under that weighting the
error separates over the linear's output channels, so every channel picks its own ratio from a grid; one
backward per probe serves all linears of a block. The chosen ratios are applied by pre-clamping weights
(``pre_clip_weight``), which the export path's plain max-abs int4 quantization then reproduces exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
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


class _ReachedLastBlock(Exception):
    """Raised by the input hook of the last block when the rest of the forward is not needed."""


def run_to_blocks(
    model: nn.Module,
    blocks: Sequence[nn.Module],
    samples: Iterable[Any],
    on_input: Callable[[int, BlockCall], None],
    *,
    stop_at_last: bool = False,
) -> None:
    """Forward each sample, calling ``on_input(index, (args, kwargs))`` with detached copies whenever
    ``blocks[index]`` is called; the forward goes on through the block as ``on_input`` left it (so it may
    edit the block). Calls that ``on_input`` makes to blocks itself are not reported. With
    ``stop_at_last`` each forward stops where the last block is first called (what comes after it is not
    needed)."""
    visiting = False

    def hook_for(index: int) -> Any:
        def hook(_module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            nonlocal visiting
            if visiting:
                return
            visiting = True
            try:
                on_input(index, (_detach(args), _detach(kwargs)))
            finally:
                visiting = False
            if stop_at_last and index == len(blocks) - 1:
                raise _ReachedLastBlock

        return hook

    handles = [b.register_forward_pre_hook(hook_for(i), with_kwargs=True) for i, b in enumerate(blocks)]
    try:
        with torch.no_grad():
            for sample in samples:
                try:
                    call_model(model, sample)
                except _ReachedLastBlock:
                    pass
    finally:
        for handle in handles:
            handle.remove()


def capture_block_inputs(
    model: nn.Module, block_modules: Sequence[nn.Module | str], samples: Iterable[Any]
) -> dict[str, list[BlockCall]]:
    """Record every call's (args, kwargs) of each block over the samples, for offline calibration."""
    blocks = resolve_modules(model, block_modules)
    calls: dict[str, list[BlockCall]] = {name: [] for name, _ in blocks}
    names = [name for name, _ in blocks]
    run_to_blocks(model, [m for _, m in blocks], samples, lambda i, call: calls[names[i]].append(call))
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


@dataclass
class LinearActivity:
    """Per block call: a linear's inputs [N, in] and the importance [N, out] of its outputs."""

    inputs: list[torch.Tensor] = field(default_factory=list)
    importances: list[torch.Tensor] = field(default_factory=list)


def _with_grad_input(args: tuple[Any, ...]) -> tuple[Any, ...]:
    """The block's first tensor argument becomes a grad-requiring leaf: every activation joins the graph."""
    if not args or not isinstance(args[0], torch.Tensor) or not args[0].is_floating_point():
        raise ValueError("a block's first positional argument must be its floating-point input tensor")
    return (args[0].detach().requires_grad_(True), *args[1:])


def linear_output_importances(
    block: nn.Module,
    linears: Mapping[str, nn.Linear],
    calls: Sequence[BlockCall],
    channel_weights: torch.Tensor | None,
    *,
    probes: int = 8,
    seed: int = 0,
) -> dict[str, LinearActivity]:
    """For every named linear: its inputs and the per-token, per-channel importance of its outputs.

    importance = mean over Rademacher probes v of (J^T (v * sqrt(F)))^2, an unbiased estimate of
    diag(J^T F J) (Gauss-Newton). One backward per probe serves all linears of the block.
    """
    if probes < 1:
        raise ValueError(f"probes must be >= 1, got {probes}")
    generator = torch.Generator().manual_seed(seed)
    activity = {name: LinearActivity() for name in linears}
    seen: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def make_hook(name: str, linear: nn.Linear) -> Any:
        def hook(_module: nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> None:
            if name in seen:
                raise ValueError(f"{name} ran more than once in one block call; cannot attribute its error")
            seen[name] = (args[0].detach().reshape(-1, linear.in_features), output)

        return hook

    state = _frozen(block)
    handles = [linear.register_forward_hook(make_hook(name, linear)) for name, linear in linears.items()]
    try:
        with torch.enable_grad():
            for args, kwargs in calls:
                seen.clear()
                out = primary_tensor(block(*_with_grad_input(args), **kwargs))
                missing = [name for name in linears if name not in seen]
                if missing:
                    raise ValueError(f"linears did not run inside the block: {missing}")
                names = list(linears)
                outputs = [seen[name][1] for name in names]
                sqrt_w = None if channel_weights is None else channel_weights.to(out.device, out.dtype).sqrt()
                totals = [torch.zeros_like(o) for o in outputs]
                for p in range(probes):
                    signs = (
                        torch.randint(0, 2, out.shape, generator=generator).to(out.device, out.dtype) * 2 - 1
                    )
                    probe = signs * sqrt_w if sqrt_w is not None else signs
                    grads = torch.autograd.grad(
                        out, outputs, probe, retain_graph=p + 1 < probes, allow_unused=True
                    )
                    for total, grad in zip(totals, grads, strict=True):
                        if grad is not None:
                            total += grad.detach().pow(2)
                for name, total in zip(names, totals, strict=True):
                    activity[name].inputs.append(seen[name][0])
                    activity[name].importances.append(
                        (total / probes).reshape(-1, linears[name].out_features)
                    )
    finally:
        for handle in handles:
            handle.remove()
        for p, requires_grad in state:
            p.requires_grad_(requires_grad)
    return activity


def clip_ratios_from_activity(
    linear: nn.Linear,
    activity: LinearActivity,
    *,
    bits: int = 4,
    group_size: int | None = None,
    ratios: Sequence[float] = DEFAULT_CLIP_RATIOS,
) -> torch.Tensor:
    """Per output channel ratio [out] minimising sum over tokens of importance * (x @ dW^T)^2."""
    if not ratios or any(not 0.0 < r <= 1.0 for r in ratios):
        raise ValueError(f"ratios must be a non-empty grid inside (0, 1], got {list(ratios)}")
    grid = sorted(set(ratios), reverse=True)  # 1.0 first: ties keep the unclipped scale
    weight = linear.weight.detach()
    errors = torch.zeros(len(grid), linear.out_features, dtype=torch.float64)
    for k, ratio in enumerate(grid):
        delta = fake_quantize_weight(weight, bits, group_size, ratio) - weight
        for x, importance in zip(activity.inputs, activity.importances, strict=True):
            errors[k] += (importance * (x @ delta.T).pow(2)).double().sum(dim=0).cpu()
    best = errors.argmin(dim=0)
    return torch.tensor(grid, dtype=weight.dtype)[best].to(weight.device)


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
    """Per output channel clip ratio [out] for one linear of a block (see ``linear_output_importances``)."""
    activity = linear_output_importances(
        block, {"linear": linear}, calls, channel_weights, probes=probes, seed=seed
    )
    return clip_ratios_from_activity(
        linear, activity["linear"], bits=bits, group_size=group_size, ratios=ratios
    )


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
        activity = linear_output_importances(
            block, {n: all_linears[n] for n in names}, calls, weights, probes=probes, seed=seed
        )
        chosen = {
            name: clip_ratios_from_activity(
                all_linears[name], activity[name], bits=bits, group_size=group_size, ratios=ratios
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
