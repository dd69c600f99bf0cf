"""`--quant w4-fisher`: FGQ-style Fisher-guided W4 of VGGT's aggregator, prepared on the eager model.

Order (each step measures on the model the previous one left): rotate the residual stream → Fisher of the
block outputs (from ``--fisher FILE`` or computed here) → 4/8-bit plan within ``--w4-budget`` → Fisher-
weighted clipping of the 4-bit linears, block by block. The result is float weights plus a
{export path: bits} plan that the 8da4w recipe applies after export; linears outside the aggregator blocks
keep the plain ``w4`` treatment.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from vggt_et.data.calibration import calibration_samples
from vggt_et.fgq.rotation import rotate_vggt, rotation_summary
from vggt_et.fgq.tasks import (
    aggregator_blocks,
    compute_vggt_fisher,
    fisher_metadata,
    load_matching_fisher,
    weights_description,
)
from vggt_et.options import EXPORT_PREFIX, CompileOptions, ProgramShape
from vggt_et.quantizers.blockwise import AllBlockInputs, plan_weight_bytes, quantize_blocks
from vggt_et.quantizers.clipping import (
    block_linears,
)
from vggt_et.quantizers.fisher import FisherStats
from vggt_et.quantizers.mixed_precision import plan_mixed_precision
from vggt_et.utils.errors import UserError

logger = logging.getLogger(__name__)
W4_FISHER_BACKENDS = ("xnnpack", "portable")


@dataclass(frozen=True)
class W4FisherSettings:
    """The three techniques' switches, checked and resolved to their values (see W4FisherFlags)."""

    fisher_path: str | None = None
    w4_budget: float = 0.9
    rotation: bool = True
    mixed_precision: bool = True
    clipping: bool = True
    group_size: int = 32


def settings_from_options(options: CompileOptions, group_size: int) -> W4FisherSettings:
    """Check the w4-fisher flags (before any heavy work); they are refused with any other --quant.

    `group_size`: the checked --w4-group-size (pipeline.quantize.w4_group_size)."""
    flags = options.w4_fisher
    if options.quant != "w4-fisher":
        given = flags.given()
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
    budget = 0.9 if flags.w4_budget is None else float(flags.w4_budget)
    if not 0.0 <= budget <= 1.0:
        raise UserError(f"--w4-budget is the share of aggregator linear weights in 4 bit: 0..1, got {budget}")
    return W4FisherSettings(
        fisher_path=flags.fisher,
        w4_budget=budget,
        rotation=flags.rotation,
        mixed_precision=flags.mixed_precision,
        clipping=flags.fisher_clip,
        group_size=group_size,
    )


def validate_w4_fisher(
    options: CompileOptions, shape: ProgramShape, tasks: Sequence[str], group_size: int
) -> W4FisherSettings:
    """All w4-fisher user errors up front, including a --fisher file made for another model or shape."""
    settings = settings_from_options(options, group_size)
    if options.quant == "w4-fisher" and settings.fisher_path:
        load_matching_fisher(settings.fisher_path, options.preset, shape, tasks, rotated=settings.rotation)
    return settings


def _fisher(
    model: nn.Module,
    settings: W4FisherSettings,
    options: CompileOptions,
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
    logger.info(f"computing Fisher over {len(samples)} samples")
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


def prepare_w4_fisher(
    model: nn.Module,
    options: CompileOptions,
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
        logger.info("folding the residual rotation")
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
        logger.info(f"planning 4/8-bit layers within a {settings.w4_budget:.0%} 4-bit budget")
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
    report["aggregator_weight_bytes"] = plan_weight_bytes(model, plan, settings.group_size)
    report["bits"] = {EXPORT_PREFIX + name: bits for name, bits in plan.items()}
    report["notes"] = notes
    return dict(report["bits"]), report


def w4_fisher_stage(
    model: nn.Module, options: CompileOptions, shape: ProgramShape, tasks: Sequence[str], group_size: int
) -> tuple[dict[str, int], dict[str, Any]]:
    """The compile pipeline's entry: calibration scenes at the compiled shape, then :func:`prepare_w4_fisher`."""
    samples = calibration_samples(options.calib_data, shape, options.calibration_count, seed=options.seed)
    return prepare_w4_fisher(
        model, options, shape, tasks, samples, settings_from_options(options, group_size)
    )
