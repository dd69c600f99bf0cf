"""VGGT's side of quantization: which layers stay float, and calibration data at the compiled shape.

The recipes themselves are generic (`vggt_et.quantizers`); this module only knows VGGT's module names
and where its calibration scenes come from.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from vggt_et.data.calibration import calibration_samples
from vggt_et.options import EXPORT_PREFIX, CompileOptions, ProgramShape, heads_for
from vggt_et.utils.errors import UserError

# Kept in float by default, as the quantization literature on VGGT does: the patch-embed convolution
# (raw pixels in) and each head's last layer (metric outputs out). Paths are inside the export wrapper.
# Layers called more than once (the camera trunk's iterations, a DPT head run over frame groups) stay float
# under static int8 whatever this list says; w4 quantizes its repeated convolutions at every call with one
# range over all calls (`quantizers.recipes._repeated_layers`).
# The DPT heads' last layer is the 1x1 conv (output_conv2.2); the 3x3 conv before it runs at full
# resolution and is the costliest conv of the head, so it is quantized like the rest of the head.
logger = logging.getLogger(__name__)
DEFAULT_KEEP_FLOAT = (
    "model.aggregator.patch_embed.patch_embed.proj",
    "model.depth_head.scratch.output_conv2.2",
    "model.point_head.scratch.output_conv2.2",
    "model.camera_head.pose_branch.fc2",
    # VGGT-Ω: the dense head's depth and confidence 1x1 convs, the camera MLP's last linear.
    "model.dense_head.proj",
    "model.dense_head.proj_conf",
    "model.camera_head.camera_branch.2",
)


def w4_group_size(options: CompileOptions) -> int:
    """`--w4-group-size` (int4 weights per group of this many inputs; 0: per output channel), checked.

    XNNPACK's blockwise int4 kernels take groups in multiples of 32; larger groups store fewer scales
    (group 32 adds 0.5 bit per weight with bf16 scales, group 128 0.125) at some accuracy cost."""
    from vggt_et.quantizers.recipes import get_recipe

    given = options.quantization.w4_group_size
    if given is None:
        return int(get_recipe("xnnpack-8da4w").defaults["group_size"])
    if options.quant not in ("w4", "w4-fisher") or options.backend not in ("xnnpack", "portable"):
        raise UserError(
            f"--w4-group-size applies to --quant w4/w4-fisher on xnnpack (got --quant {options.quant} "
            f"--backend {options.backend}); QNN's int4 recipe (--backend qnn --quant w4) has no group size"
        )
    size = int(given)
    if size < 0 or size % 32:
        raise UserError(f"--w4-group-size must be 0 (per channel) or a multiple of 32, got {size}")
    return size


def keep_float_patterns(options: CompileOptions) -> tuple[str, ...]:
    """`--keep-float` patterns (module-path globs or `re:` regexes; they replace the defaults, `none`
    keeps nothing float), checked before any work."""
    from vggt_et.quantizers.float_layers import InvalidLayerPatternError, compile_patterns

    given = options.quantization.keep_float
    if given is None:
        return DEFAULT_KEEP_FLOAT
    if options.quant not in ("int8", "w4", "w4-fisher"):
        raise UserError(f"--keep-float applies to --quant int8/w4/w4-fisher (got --quant {options.quant})")
    patterns = tuple(given)
    if patterns == ("none",):
        return ()
    try:
        compile_patterns(patterns)
    except InvalidLayerPatternError as exc:
        raise UserError(str(exc)) from None
    return patterns


def warn_unmatched_keep_float(options: CompileOptions, outputs: Sequence[str]) -> list[str]:
    """Warn (before any work) about each --keep-float pattern that matches no layer of the program,
    naming a few layers it could have meant; returns those patterns."""
    from torch import nn

    from vggt_et.model.loading import build_model
    from vggt_et.quantizers.float_layers import near_paths, unmatched_patterns

    patterns = keep_float_patterns(options)
    if options.quantization.keep_float is None or not patterns:
        return []
    model = build_model(options.preset, heads=heads_for(outputs), device="meta")
    layers = [
        f"{EXPORT_PREFIX}{name}"
        for name, module in model.named_modules()
        if isinstance(module, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d))
    ]
    unmatched = unmatched_patterns(patterns, layers)
    for pattern in unmatched:
        hints = near_paths(pattern, layers)
        logger.warning(
            "--keep-float %r matches no layer of this program%s",
            pattern,
            f"; did you mean {', '.join(hints)}?" if hints else "",
        )
    return unmatched


def int8_dynamic(options: CompileOptions) -> bool:
    """`--int8-activations dynamic` (per-token ranges at run time, XNNPACK only), checked up front."""
    mode = options.quantization.int8_activations
    if mode is None:
        return False
    if options.quant != "int8" or options.backend not in ("xnnpack", "portable"):
        raise UserError(
            f"--int8-activations applies to --quant int8 on xnnpack (got --quant {options.quant} "
            f"--backend {options.backend}); QNN runs static activations only"
        )
    return mode == "dynamic"


def quantize_for_backend(
    ep, options: CompileOptions, shape: ProgramShape, *, layer_bits: dict[str, int] | None = None
) -> tuple[Any, dict]:
    """Quantize the exported VGGT program with the backend's recipe for `options.quant`.

    `layer_bits` ({export path: bits}, from w4-fisher) sets per-layer weight bits of the 8da4w recipe."""
    from vggt_et.quantizers.recipes import get_recipe, quantize_program, recipe_for

    scheme = "w4" if options.quant == "w4-fisher" else options.quant
    try:
        recipe = recipe_for(options.backend if options.backend != "portable" else "xnnpack", scheme)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    samples = None
    if get_recipe(recipe).needs_calibration:
        samples = calibration_samples(
            options.calib_data,
            shape,
            options.calibration_count,
            seed=options.seed,
            batch_dim=options.backend != "qnn",
        )
    keep_float = keep_float_patterns(options)
    recipe_options: dict[str, Any] = {"bits_by_layer": layer_bits} if layer_bits else {}
    if recipe == "xnnpack-8da4w":
        recipe_options["group_size"] = w4_group_size(options)
    if recipe == "xnnpack-int8":
        recipe_options["dynamic"] = int8_dynamic(options)
    result = quantize_program(ep, recipe, samples, keep_float=keep_float, progress=True, **recipe_options)
    details = result.to_dict()
    details["calibration_data"] = options.calib_data or "synthetic scenes"
    return result.program, details
