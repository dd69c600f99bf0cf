"""Every user error of `vggt-et compile`, found before any heavy work, in one place.

Kept apart from the compile driver, and importing nothing of the compiler (passes, ExecuTorch), so a typo
is answered in about a second: the CLI runs `validate` before it imports `pipeline.compile`.
"""

from __future__ import annotations

from collections.abc import Sequence

from vggt_et.data.calibration import check_calibration_data
from vggt_et.options import (
    BACKENDS,
    CALIBRATED_SCHEMES,
    OUTPUT_GROUPS,
    QUANT_SCHEMES,
    CompileOptions,
    ProgramShape,
    heads_for,
    parse_outputs,
)
from vggt_et.pipeline.lowering import require_qnn_sdk
from vggt_et.pipeline.quantize import (
    int8_dynamic,
    keep_float_patterns,
    w4_group_size,
    warn_unmatched_keep_float,
)
from vggt_et.utils.errors import UserError

TFLITE_RAM_PER_WEIGHT_BYTE = 5.7  # litert-torch's conversion peak over the fp32 weights (VGGT-1B: 20.0 GiB)


def refuse_unused_flags(options: CompileOptions) -> None:
    """One rule for flags the chosen scheme or backend would not use: they are refused, never ignored."""
    if options.quant not in CALIBRATED_SCHEMES:
        given = [
            f
            for f, v in (("--calib-data", options.calib_data), ("--calib-samples", options.calib_samples))
            if v is not None
        ]
        if given:
            raise UserError(
                f"{' and '.join(given)} {'only apply' if len(given) > 1 else 'only applies'} to calibrated schemes (--quant int8, w4, w4-fisher), "
                f"not --quant {options.quant}; drop {'them' if len(given) > 1 else 'it'}"
            )
    if options.soc is not None and options.backend != "qnn":
        raise UserError(f"--soc {options.soc} only applies to --backend qnn, not {options.backend}; drop it")
    if options.etrecord and (options.stop_before_lowering or options.backend == "tflite"):
        reason = "--stop-before-lowering" if options.stop_before_lowering else "--backend tflite"
        raise UserError(f"--etrecord needs an ExecuTorch lowering, which {reason} skips; drop --etrecord")


def check_paths(options: CompileOptions) -> None:
    from vggt_et.utils import checks

    checks.output_file(options.output, "-o")
    if options.report:
        checks.output_file(options.report, "--report")
    if options.etrecord:
        checks.output_file(options.etrecord, "--etrecord")
    fisher = options.w4_fisher.fisher
    if fisher is not None:
        checks.input_file(fisher, "--fisher", "statistics file from `vggt-et fisher`")
    check_calibration_data(options.calib_data, options.calibration_count)
    checks.distinct_paths(
        {"-o": options.output, "--report": options.report, "--etrecord": options.etrecord},
        {"--checkpoint": options.checkpoint, "--fisher": fisher},
    )


def check_tflite_memory(options: CompileOptions, heads: Sequence[str]) -> None:
    """litert-torch holds several copies of the weights while converting; say so before it starts."""
    from vggt_et.model.loading import build_model
    from vggt_et.utils.timing import available_memory_bytes

    params = sum(p.numel() for p in build_model(options.preset, heads=heads, device="meta").parameters())
    needed = TFLITE_RAM_PER_WEIGHT_BYTE * 4 * params
    available = available_memory_bytes()
    if available is not None and needed > available:
        raise UserError(
            f"--backend tflite on {options.preset} needs about {needed / 2**30:.1f} GiB of RAM for the "
            f"conversion ({TFLITE_RAM_PER_WEIGHT_BYTE}x the fp32 weights) and {available / 2**30:.1f} GiB "
            "is available; free memory or convert on a larger machine"
        )


def validate(options: CompileOptions) -> tuple[ProgramShape, tuple[str, ...]]:
    """All user errors, before any heavy work, in one place."""
    from vggt_et.model.presets import get_preset

    config = get_preset(options.preset)
    if options.max_frames is not None:
        if options.max_frames < 1:
            raise UserError(f"--max-frames must be at least 1, got {options.max_frames}")
        if options.backend == "tflite" or options.stop_before_lowering:
            raise UserError("--max-frames writes a multi-method .pte: use --backend xnnpack, qnn or portable")
    frames = options.max_frames or options.frames
    shape = ProgramShape(frames, options.height, options.width, config.patch_size)
    outputs = parse_outputs(options.outputs)
    missing = [o for o in outputs if OUTPUT_GROUPS[o].head not in config.HEADS]
    if missing:
        raise UserError(
            f"preset {options.preset!r} has no {', '.join(missing)} output; choose from "
            + ", ".join(o for o, group in OUTPUT_GROUPS.items() if group.head in config.HEADS)
        )
    if options.backend not in BACKENDS:
        raise UserError(f"unknown backend {options.backend!r}; choose {', '.join(BACKENDS)}")
    if options.quant not in QUANT_SCHEMES:
        raise UserError(f"unknown --quant {options.quant!r}; choose one of {', '.join(QUANT_SCHEMES)}")
    if options.attention_budget is not None and options.attention_budget < 1:
        raise UserError(
            f"--attention-budget must be a positive size or 'none', got {options.attention_budget}"
        )
    refuse_unused_flags(options)
    check_paths(options)
    from vggt_et.model.loading import check_model_source

    heads = heads_for(outputs)
    check_model_source(options.preset, options.checkpoint, options.random_weights, heads)
    if options.quant in ("int8", "w4"):
        from vggt_et.quantizers.recipes import UnsupportedRecipeError, recipe_for

        try:
            recipe_for("xnnpack" if options.backend == "portable" else options.backend, options.quant)
        except UnsupportedRecipeError as exc:
            raise UserError(str(exc)) from None
    if options.backend == "qnn" and not options.stop_before_lowering:
        require_qnn_sdk()
    if options.backend == "tflite":
        from vggt_et.pipeline.tflite import require_litert

        require_litert()
        check_tflite_memory(options, heads)
    from vggt_et.fgq.w4_fisher import validate_w4_fisher

    validate_w4_fisher(options, shape, outputs, w4_group_size(options))
    keep_float_patterns(options)
    warn_unmatched_keep_float(options, outputs)
    int8_dynamic(options)
    return shape, outputs
