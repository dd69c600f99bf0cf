"""`--quant w4-fisher`: FGQ-style Fisher-guided W4 of VGGT's aggregator, prepared on the eager model.

Order (each step measures on the model the previous one left): rotate the residual stream → Fisher of the
block outputs (from ``--fisher FILE`` or computed here) → 4/8-bit plan within ``--w4-budget`` → Fisher-
weighted clipping of the 4-bit linears, block by block. The result is float weights plus a
{export path: bits} plan that the 8da4w recipe applies after export; linears outside the aggregator blocks
keep the plain ``w4`` treatment.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from vggt_et.errors import UserError
from vggt_et.export import EXPORT_PREFIX, ProgramShape
from vggt_et.fisher_tasks import (
    aggregator_blocks,
    compute_vggt_fisher,
    fisher_metadata,
    load_matching_fisher,
    rotate_vggt,
    rotation_summary,
    weights_description,
)
from vggt_et.quantizers.clipping import (
    BlockCall,
    apply_fisher_clipping,
    block_linears,
    block_output_error,
    block_outputs,
    run_to_blocks,
    swapped_weights,
)
from vggt_et.quantizers.fisher import FisherStats
from vggt_et.quantizers.mixed_precision import plan_mixed_precision
from vggt_et.quantizers.w4_transforms import fake_quantize_weight, weight_storage_bytes

W4_FISHER_BACKENDS = ("xnnpack", "portable")


@dataclass(frozen=True)
class W4FisherSettings:
    """The user's switches for the three techniques, read from CompileOptions.extra."""

    fisher_path: str | None = None
    w4_budget: float = 0.9
    rotation: bool = True
    mixed_precision: bool = True
    clipping: bool = True
    group_size: int = 32


def settings_from_options(options: Any) -> W4FisherSettings:
    """Check the w4-fisher flags (before any heavy work); they are refused with any other --quant."""
    extra = options.extra
    flags = {
        "--fisher": extra.get("fisher"),
        "--w4-budget": extra.get("w4_budget"),
        "--no-rotation": extra.get("no_rotation"),
        "--no-mixed-precision": extra.get("no_mixed_precision"),
        "--no-fisher-clip": extra.get("no_fisher_clip"),
    }
    if options.quant != "w4-fisher":
        given = [flag for flag, value in flags.items() if value not in (None, False)]
        if given:
            raise UserError(
                f"{', '.join(given)} only apply to --quant w4-fisher (got --quant {options.quant})"
            )
        return W4FisherSettings()
    if options.backend not in W4_FISHER_BACKENDS:
        raise UserError(
            f"--quant w4-fisher needs dynamic int8 activations with int4/int8 weights, which "
            f"{options.backend} does not run; use --backend xnnpack, or --quant w4 for {options.backend}"
        )
    budget = 0.9 if extra.get("w4_budget") is None else float(extra["w4_budget"])
    if not 0.0 <= budget <= 1.0:
        raise UserError(f"--w4-budget is the share of aggregator linear weights in 4 bit: 0..1, got {budget}")
    from vggt_et.quantize import w4_group_size

    return W4FisherSettings(
        fisher_path=extra.get("fisher"),
        w4_budget=budget,
        rotation=not extra.get("no_rotation", False),
        mixed_precision=not extra.get("no_mixed_precision", False),
        clipping=not extra.get("no_fisher_clip", False),
        group_size=w4_group_size(options),
    )


def validate_w4_fisher(options: Any, shape: ProgramShape, tasks: Sequence[str]) -> W4FisherSettings:
    """All w4-fisher user errors up front, including a --fisher file made for another model or shape."""
    settings = settings_from_options(options)
    from vggt_et.model.omega_config import VGGTOmegaConfig
    from vggt_et.model.presets import get_preset

    if options.quant == "w4-fisher" and isinstance(get_preset(options.preset), VGGTOmegaConfig):
        raise UserError(
            "--quant w4-fisher is not available for VGGT-Ω presets yet (its Fisher tasks and rotation cover "
            "VGGT's block layout); use --quant w4"
        )
    if options.quant == "w4-fisher" and settings.fisher_path:
        load_matching_fisher(settings.fisher_path, options.preset, shape, tasks, rotated=settings.rotation)
    return settings


def _progress(message: str) -> None:
    print(f"w4-fisher: {message}", file=sys.stderr, flush=True)


def _fisher(
    model: nn.Module,
    settings: W4FisherSettings,
    options: Any,
    shape: ProgramShape,
    tasks: Sequence[str],
    samples: list[tuple],
    notes: list[str],
) -> FisherStats:
    weights = weights_description(options.checkpoint, options.random_weights, options.seed)
    if settings.fisher_path:
        stats = load_matching_fisher(
            settings.fisher_path, options.preset, shape, tasks, rotated=settings.rotation
        )
        if stats.metadata.get("weights") != weights:
            notes.append(
                f"--fisher file was computed on {stats.metadata.get('weights')}, compiling {weights}"
            )
        return stats
    notes.append(
        f"no --fisher file: Fisher computed on the fly from {len(samples)} calibration samples "
        "(save one with `vggt-et fisher` to reuse it)"
    )
    _progress(f"computing Fisher over {len(samples)} samples")
    metadata = fisher_metadata(
        options.preset,
        shape,
        len(samples),
        tasks,
        rotated=settings.rotation,
        weights=weights,
        calib_data=options.calib_data,
    )
    return compute_vggt_fisher(model, samples, tasks, metadata)


class AllBlockInputs(Mapping[str, Sequence[BlockCall]]):
    """Every block's inputs from one forward per sample (stopped at the last block), kept together.

    Why: planning reads every block twice from the unchanged model, and a forward per block and sample
    costs about one aggregator pass per block (hours for VGGT-1B on two cores). One capture holds
    2*depth block inputs per sample (about 0.5 GiB per 2-frame 518x518 sample for VGGT-1B). Use only
    while the model does not change; clipping, which edits blocks as it goes, uses
    :func:`_in_forward_order`.
    """

    def __init__(self, model: nn.Module, paths: Sequence[str], samples: Sequence[tuple]) -> None:
        self.model, self.paths, self.samples = model, list(paths), list(samples)
        self._all: dict[str, list[BlockCall]] | None = None

    def __getitem__(self, path: str) -> list[BlockCall]:
        if path not in self.paths:
            raise KeyError(path)
        if self._all is None:
            self._all = {p: [] for p in self.paths}
            blocks = [self.model.get_submodule(p) for p in self.paths]
            run_to_blocks(
                self.model,
                blocks,
                self.samples,
                lambda i, call: self._all[self.paths[i]].append(call),
                stop_at_last=True,
            )
        return self._all[path]

    def __contains__(self, path: object) -> bool:
        return path in self.paths

    def __iter__(self) -> Iterator[str]:
        return iter(self.paths)

    def __len__(self) -> int:
        return len(self.paths)


def _batched(samples: Sequence[tuple]) -> tuple:
    """The samples as one batch (VGGT's inputs are [B, S, 3, H, W]): one forward carries them all."""
    return tuple(torch.cat(parts, dim=0) for parts in zip(*samples, strict=True))


def _in_forward_order(
    model: nn.Module, paths: Sequence[str], samples: Sequence[tuple], visit: Callable[[int, BlockCall], None]
) -> None:
    """``visit(index, call)`` on each block's input (all samples batched) as one forward reaches it; the
    forward then goes on through the block as ``visit`` left it.

    Why: clipping edits each block and the next block must see what the edited one produces. Capturing
    each block's inputs anew costs a forward up to that block per block (quadratic in depth: about an
    hour of the VGGT-1B compile on two cores); here the one forward carries the edited outputs on."""
    blocks = [model.get_submodule(p) for p in paths]
    run_to_blocks(model, blocks, [_batched(samples)], visit, stop_at_last=True)


def _fake_quantized(linears: dict[str, nn.Linear], plan: dict[str, int], group_size: int) -> dict:
    return {
        linear: fake_quantize_weight(linear.weight, plan[name], group_size if plan[name] == 4 else None)
        for name, linear in linears.items()
    }


def _quantize_block(
    model: nn.Module,
    path: str,
    calls: Sequence[BlockCall],
    weights: torch.Tensor,
    plan: dict[str, int],
    *,
    clipping: bool,
    group_size: int,
) -> dict[str, Any]:
    """One block: error of the plan with plain rounding, then (optionally) clip its 4-bit linears in place
    and measure again."""
    block = model.get_submodule(path)
    references = block_outputs(block, calls)
    linears = block_linears(block, path)
    with swapped_weights(_fake_quantized(linears, plan, group_size)):
        rtn = block_output_error(block, calls, references, weights)
    entry: dict[str, Any] = {
        "bits": {name[len(path) + 1 :]: plan[name] for name in linears},
        "rtn_weighted": rtn[0],
        "rtn_unweighted": rtn[1],
        "clipped": False,
    }
    four_bit = [name for name in linears if plan[name] == 4]
    final = rtn
    if clipping and four_bit:
        report = apply_fisher_clipping(
            model,
            [path],
            {path: calls},
            weights[None],
            linears={path: four_bit},
            bits=4,
            group_size=group_size,
        )
        entry["clipped"] = report.blocks[path].kept
        if entry["clipped"]:
            with swapped_weights(_fake_quantized(linears, plan, group_size)):
                final = block_output_error(block, calls, references, weights)
    entry["final_weighted"], entry["final_unweighted"] = final
    return entry


def quantize_blocks(
    model: nn.Module,
    blocks: list[tuple[str, str]],
    samples: list[tuple],
    channel_weights: torch.Tensor,
    plan: dict[str, int],
    *,
    clipping: bool,
    group_size: int,
) -> dict[str, dict[str, Any]]:
    """Per block, in order: error of the plan with plain rounding, then (optionally) clip its 4-bit linears
    and measure again. Errors are block-output MSE against the float block on the same inputs, Fisher-
    weighted and unweighted; each block sees the inputs the already-clipped blocks before it produce."""
    results: dict[str, dict[str, Any]] = {}

    def visit(index: int, calls: Sequence[BlockCall]) -> None:
        label, path = blocks[index]
        entry = _quantize_block(
            model, path, calls, channel_weights[index], plan, clipping=clipping, group_size=group_size
        )
        results[label] = entry
        _progress(
            f"block {label}: weighted error {entry['rtn_weighted']:.3e} -> {entry['final_weighted']:.3e}"
        )

    paths = [path for _, path in blocks]
    if clipping:  # blocks change as we go: one batched forward carries each clipped block's output on
        _in_forward_order(model, paths, samples, lambda index, call: visit(index, [call]))
    else:  # nothing changes: one capture serves every block
        inputs = AllBlockInputs(model, paths, samples)
        for index, path in enumerate(paths):
            visit(index, inputs[path])
    return results


def _weight_bytes(model: nn.Module, plan: dict[str, int], group_size: int) -> dict[str, int]:
    modules = dict(model.named_modules())
    planned = all_w4 = fp32 = 0
    for name, bits in plan.items():
        out_f, in_f = modules[name].weight.shape
        planned += weight_storage_bytes(out_f, in_f, bits, group_size if bits == 4 else None, 4)
        all_w4 += weight_storage_bytes(out_f, in_f, 4, group_size, 4)
        fp32 += out_f * in_f * 4
    return {"planned": planned, "all_w4": all_w4, "fp32": fp32}


def prepare_w4_fisher(
    model: nn.Module,
    options: Any,
    shape: ProgramShape,
    tasks: Sequence[str],
    samples: list[tuple],
    settings: W4FisherSettings,
) -> tuple[dict[str, int], dict[str, Any]]:
    """Edit the eager model in place; returns ({export path: bits} for the 8da4w recipe, report dict)."""
    model.eval()
    notes: list[str] = []
    report: dict[str, Any] = {
        "techniques": {
            "rotation": settings.rotation,
            "mixed_precision": settings.mixed_precision,
            "fisher_clip": settings.clipping,
        },
        "group_size": settings.group_size,
    }
    if settings.rotation:
        _progress("folding the residual rotation")
        report["rotation"] = rotation_summary(rotate_vggt(model))
    stats = _fisher(model, settings, options, shape, tasks, samples, notes)
    report["fisher"] = {
        "source": settings.fisher_path or "computed",
        "tasks": list(stats.task_names),
        "samples": stats.num_samples,
    }
    blocks = aggregator_blocks(model)
    if stats.block_names != [label for label, _ in blocks]:
        raise UserError(f"Fisher statistics cover blocks {stats.block_names[:2]}..., not this model's blocks")
    channel_weights = stats.combined_weights()
    paths = [path for _, path in blocks]
    if settings.mixed_precision:
        _progress(f"planning 4/8-bit layers within a {settings.w4_budget:.0%} 4-bit budget")
        mixed = plan_mixed_precision(
            model,
            paths,
            AllBlockInputs(model, paths, samples),
            channel_weights,
            w4_budget=settings.w4_budget,
            block_importance=stats.block_importance(),
            group_size=settings.group_size,
        )
        plan = dict(mixed.plan)
    else:
        plan = {name: 4 for path in paths for name in block_linears(model.get_submodule(path), path)}
    report["blocks"] = quantize_blocks(
        model,
        blocks,
        samples,
        channel_weights,
        plan,
        clipping=settings.clipping,
        group_size=settings.group_size,
    )
    params = {name: module.weight.numel() for name, module in model.named_modules() if name in plan}
    report["w4_budget"] = settings.w4_budget if settings.mixed_precision else 1.0
    report["w4_fraction"] = round(sum(p for n, p in params.items() if plan[n] == 4) / sum(params.values()), 4)
    report["layers_8bit"] = sorted(name for name, bits in plan.items() if bits == 8)
    report["aggregator_weight_bytes"] = _weight_bytes(model, plan, settings.group_size)
    report["bits"] = {EXPORT_PREFIX + name: bits for name, bits in plan.items()}
    report["notes"] = notes
    return dict(report["bits"]), report


def w4_fisher_stage(
    model: nn.Module, options: Any, shape: ProgramShape, tasks: Sequence[str]
) -> tuple[dict[str, int], dict[str, Any]]:
    """The compile pipeline's entry: calibration scenes at the compiled shape, then :func:`prepare_w4_fisher`."""
    from vggt_et.quantize import calibration_samples

    samples = calibration_samples(options.calib_data, shape, options.calibration_count, seed=options.seed)
    return prepare_w4_fisher(model, options, shape, tasks, samples, settings_from_options(options))
