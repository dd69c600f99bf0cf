"""VGGT-Ω's official image loader (`vggt_omega/utils/load_fn.py`), with each image's pixel transform.

Differs from VGGT's: extreme aspect ratios are first centre-cropped into [0.5, 2] (height / width), then
the image is resized (PIL BICUBIC) either to keep about (resolution / patch)² patches ("balanced", the
default) or to put its longer side at `resolution` ("max_size"); both sides are multiples of the patch
(16). Mixed shapes are padded white to the largest, as in VGGT's loader.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import torch
from PIL import Image

from vggt_et.data.preprocess import (
    PixelTransform,
    _check_paths,
    _round_to_patch,
    open_rgb,
    pad_to_common_size,
    to_tensor,
)
from vggt_et.utils.errors import UserError

OMEGA_RESOLUTION = 512
OMEGA_PATCH_SIZE = 16
OMEGA_MODES = ("balanced", "max_size")
ASPECT_RANGE = (0.5, 2.0)  # height / width kept after the centre crop


def aspect_crop_box(width: int, height: int) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of the centre crop that brings height/width into ASPECT_RANGE."""
    low, high = ASPECT_RANGE
    aspect = height / max(width, 1)
    if aspect < low:
        crop_w = min(width, max(1, round(height / low)))
        left = max((width - crop_w) // 2, 0)
        return left, 0, left + crop_w, height
    if aspect > high:
        crop_h = min(height, max(1, round(width * high)))
        top = max((height - crop_h) // 2, 0)
        return 0, top, width, top + crop_h
    return 0, 0, width, height


def target_shape(aspect: float, mode: str, resolution: int, patch_size: int) -> tuple[int, int]:
    """(H, W) for an image of height/width `aspect`: multiples of `patch_size`."""
    if mode == "balanced":  # about (resolution / patch)² patches whatever the aspect
        tokens = (resolution // patch_size) ** 2
        w_patches = math.sqrt(tokens / aspect)
        h_patches = tokens / w_patches
        return max(1, round(h_patches)) * patch_size, max(1, round(w_patches)) * patch_size
    if aspect >= 1.0:
        return resolution, _round_to_patch(resolution / aspect, patch_size)
    return _round_to_patch(resolution * aspect, patch_size), resolution


def preprocess_image_omega(
    img: Image.Image, mode: str, resolution: int, patch_size: int
) -> tuple[torch.Tensor, PixelTransform]:
    """One RGB image → [3, H, W] in [0, 1] and the transform from its pixels to the tensor's."""
    left, top, right, bottom = aspect_crop_box(img.width, img.height)
    cropped = img.crop((left, top, right, bottom))
    out_h, out_w = target_shape(cropped.height / max(cropped.width, 1), mode, resolution, patch_size)
    tensor = to_tensor(cropped.resize((out_w, out_h), Image.Resampling.BICUBIC))
    scale_x, scale_y = out_w / cropped.width, out_h / cropped.height
    transform = PixelTransform(
        scale_x, scale_y, -scale_x * left, -scale_y * top, (img.height, img.width), (out_h, out_w)
    )
    return tensor, transform


def load_and_preprocess_images_omega(
    paths: Sequence[str | os.PathLike],
    mode: str = "balanced",
    image_resolution: int = OMEGA_RESOLUTION,
    patch_size: int = OMEGA_PATCH_SIZE,
) -> tuple[torch.Tensor, list[PixelTransform]]:
    """Images as VGGT-Ω's loader makes them: [N, 3, H, W] in [0, 1], plus each image's transform."""
    if mode not in OMEGA_MODES:
        raise UserError(f"unknown preprocessing mode {mode!r}; use {' or '.join(OMEGA_MODES)}")
    if patch_size <= 0 or image_resolution <= 0 or image_resolution % patch_size:
        raise UserError(
            f"image resolution {image_resolution} must be a positive multiple of the patch size {patch_size}"
        )
    tensors, transforms = [], []
    for path in _check_paths(paths):
        tensor, transform = preprocess_image_omega(open_rgb(path), mode, image_resolution, patch_size)
        tensors.append(tensor)
        transforms.append(transform)
    return pad_to_common_size(tensors, transforms)
