"""VGGT's side of quantization: which layers stay float, and calibration data at the compiled shape.

The recipes themselves are generic (`vggt_et.quantizers`); this module only knows VGGT's module names
and where its calibration scenes come from.
"""

from __future__ import annotations

from typing import Any

from vggt_et.errors import UserError
from vggt_et.export import ProgramShape

# Kept in float by default, as the quantization literature on VGGT does: the patch-embed convolution
# (raw pixels in) and each head's last layer (metric outputs out). Paths are inside the export wrapper.
# The DPT heads' last layer is the 1x1 conv (output_conv2.2); the 3x3 conv before it runs at full
# resolution and is the costliest conv of the head, so it is quantized like the rest of the head.
DEFAULT_KEEP_FLOAT = (
    "model.aggregator.patch_embed.patch_embed.proj",
    "model.depth_head.scratch.output_conv2.2",
    "model.point_head.scratch.output_conv2.2",
    "model.camera_head.pose_branch.fc2",
)


def w4_group_size(options) -> int:
    """`--w4-group-size` (int4 weights per group of this many inputs; 0: per output channel), checked.

    XNNPACK's blockwise int4 kernels take groups in multiples of 32; larger groups store fewer scales
    (group 32 adds 0.5 bit per weight with bf16 scales, group 128 0.125) at some accuracy cost."""
    from vggt_et.quantizers.recipes import get_recipe

    given = options.extra.get("w4_group_size")
    if given is None:
        return int(get_recipe("xnnpack-8da4w").defaults["group_size"])
    if options.quant not in ("w4", "w4-fisher") or options.backend not in ("xnnpack", "portable"):
        raise UserError(
            f"--w4-group-size applies to --quant w4/w4-fisher on xnnpack (got --quant {options.quant} "
            f"--backend {options.backend}); QNN's per-block int4 is --quant w4-block"
        )
    size = int(given)
    if size < 0 or size % 32:
        raise UserError(f"--w4-group-size must be 0 (per channel) or a multiple of 32, got {size}")
    return size


def calibration_samples(
    calib_data: str | None, shape: ProgramShape, count: int, *, seed: int = 0, batch_dim: bool = True
) -> list[tuple]:
    """`count` S-view groups from a BlendedMVS-layout folder (synthetic scenes when None), as model inputs
    ([1, S, 3, H, W], or [S, 3, H, W] for rank-4 QNN programs)."""
    from vggt_et.data.calibration import calibration_groups

    if count < 1:
        raise UserError(f"--calib-samples must be at least 1, got {count}")
    groups = calibration_groups(
        calib_data, shape.frames, shape.height, shape.width, n_groups=count, seed=seed
    )
    return [(group.images.unsqueeze(0).float() if batch_dim else group.images.float(),) for group in groups]


def quantize_for_backend(
    ep, options, shape: ProgramShape, *, layer_bits: dict[str, int] | None = None
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
            options.calib_samples,
            seed=options.seed,
            batch_dim=options.backend != "qnn",
        )
    keep_float = tuple(options.extra.get("keep_float", DEFAULT_KEEP_FLOAT))
    recipe_options: dict[str, Any] = {"bits_by_layer": layer_bits} if layer_bits else {}
    if recipe == "xnnpack-8da4w":
        recipe_options["group_size"] = w4_group_size(options)
    result = quantize_program(ep, recipe, samples, keep_float=keep_float, progress=True, **recipe_options)
    details = result.to_dict()
    details["calibration_data"] = options.calib_data or "synthetic scenes"
    return result.program, details
