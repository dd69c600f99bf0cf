"""Image preprocessing: the official VGGT loader, and a fixed-shape variant for compiled programs.

`load_and_preprocess_images` reproduces `vggt/utils/load_fn.py` (VGGT_REFERENCE.md §1) bit for bit:
RGBA composited on white, PIL BICUBIC resize, ToTensor (uint8 / 255), centre crop or white pad.
A .pte program has one fixed input shape, so `load_images_to_shape` fits any image to a given
(H, W) with the same rules, and returns the pixel transform it applied so that intrinsics and
depth maps can follow the image. No normalisation here: the model does it.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from vggt_et.utils.errors import UserError

PATCH_SIZE = 14  # VGGT's; the official loader rounds to it
PATCH_SIZES = (14, 16)  # VGGT, VGGT-Ω: a compiled program's H and W are multiples of one of them
OFFICIAL_TARGET_SIZE = 518
MODES = ("crop", "pad")


@dataclass(frozen=True)
class PixelTransform:
    """An axis-aligned resize + shift from an input image to an output image.

    In continuous pixel-edge coordinates (pixel i spans [i, i+1]) the map is
    `x_out = scale_x * x_in + offset_x`, `y_out = scale_y * y_in + offset_y`; a negative offset is
    a crop, a positive one is padding. Pixel indices / intrinsics use the OpenCV convention (pixel
    i's centre is at coordinate i), hence the half-pixel terms in `matrix`.
    """

    scale_x: float
    scale_y: float
    offset_x: float
    offset_y: float
    in_size_hw: tuple[int, int]
    out_size_hw: tuple[int, int]

    def matrix(self) -> np.ndarray:
        """3x3 matrix mapping homogeneous pixel-centre coordinates of the input to the output."""
        return np.array(
            [
                [self.scale_x, 0.0, 0.5 * self.scale_x + self.offset_x - 0.5],
                [0.0, self.scale_y, 0.5 * self.scale_y + self.offset_y - 0.5],
                [0.0, 0.0, 1.0],
            ]
        )

    def apply_to_intrinsics(self, intrinsics):
        """K' = A @ K for [..., 3, 3] intrinsics (numpy or torch, type and dtype kept)."""
        a = self.matrix()
        if isinstance(intrinsics, torch.Tensor):
            return torch.as_tensor(a, dtype=intrinsics.dtype, device=intrinsics.device) @ intrinsics
        intrinsics = np.asarray(intrinsics)
        return (a @ intrinsics).astype(intrinsics.dtype if intrinsics.dtype.kind == "f" else np.float64)

    def apply_to_pixels(self, uv: np.ndarray) -> np.ndarray:
        """Map [..., 2] (u, v) pixel-centre coordinates of the input to the output."""
        uv = np.asarray(uv, dtype=np.float64)
        scale = np.array([self.scale_x, self.scale_y])
        offset = np.array([self.offset_x, self.offset_y])
        return (uv + 0.5) * scale + offset - 0.5

    def for_input_size(self, height: int, width: int) -> PixelTransform:
        """The same geometric map for an array covering the input image at another resolution."""
        in_h, in_w = self.in_size_hw
        return PixelTransform(
            self.scale_x * in_w / width,
            self.scale_y * in_h / height,
            self.offset_x,
            self.offset_y,
            (height, width),
            self.out_size_hw,
        )

    def then_offset(self, dx: float, dy: float, out_size_hw: tuple[int, int]) -> PixelTransform:
        """This transform followed by a shift (padding / cropping) into a canvas of `out_size_hw`."""
        return PixelTransform(
            self.scale_x, self.scale_y, self.offset_x + dx, self.offset_y + dy, self.in_size_hw, out_size_hw
        )

    def warp_nearest(self, array: np.ndarray, fill: float = 0.0) -> np.ndarray:
        """Resample an [h, w, ...] array (e.g. a depth map) with this transform, nearest neighbour.

        Nearest keeps depth values exact (no blending across depth edges); output pixels that fall
        outside the input (padding) get `fill`. For an array at another resolution than the image
        the transform was made for, use `for_input_size` first.
        """
        array = np.asarray(array)
        if tuple(array.shape[:2]) != tuple(self.in_size_hw):
            raise ValueError(f"array of shape {array.shape} does not match transform input {self.in_size_hw}")
        out_h, out_w = self.out_size_hw
        src_x = np.floor((np.arange(out_w) + 0.5 - self.offset_x) / self.scale_x).astype(np.int64)
        src_y = np.floor((np.arange(out_h) + 0.5 - self.offset_y) / self.scale_y).astype(np.int64)
        valid_x = (src_x >= 0) & (src_x < array.shape[1])
        valid_y = (src_y >= 0) & (src_y < array.shape[0])
        out = array[np.clip(src_y, 0, array.shape[0] - 1)][:, np.clip(src_x, 0, array.shape[1] - 1)]
        out = out.copy()
        out[~(valid_y[:, None] & valid_x[None, :])] = fill
        return out


@dataclass(frozen=True)
class _Layout:
    """Resize to (resize_w, resize_h), then place at (offset_x, offset_y) in an out_h x out_w canvas."""

    resize_w: int
    resize_h: int
    offset_x: int
    offset_y: int
    out_h: int
    out_w: int


def open_rgb(path: str | os.PathLike) -> Image.Image:
    """Open an image as RGB; RGBA is composited onto white first, as the official loader does."""
    try:
        with Image.open(path) as opened:
            img = opened.copy()
    except FileNotFoundError:
        raise UserError(f"{path}: image not found; check the path") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read image ({exc}); pass a JPEG/PNG file") from None
    return as_rgb(img, str(path))


def _to_8bit(img: Image.Image, name: str) -> Image.Image:
    """16-bit greyscale ("I;16*", or "I" as older Pillow opens such PNGs) scaled to 8 bit, 65535 → 255.

    PIL's own conversion clips at 255, which turns almost every pixel of a 16-bit image white. 16-bit RGB
    PNGs need nothing: PIL already opens them as 8-bit RGB."""
    array = np.asarray(img)
    if img.mode == "F" or array.min() < 0 or array.max() > 65535:
        raise UserError(
            f"{name}: {img.mode} image with values outside 0..65535 (float or 32-bit data); "
            "save it as an 8- or 16-bit PNG or a JPEG"
        )
    scaled = np.round(array.astype(np.float64) / 257.0).astype(np.uint8)
    return Image.fromarray(scaled, mode="L")


def as_rgb(img: Image.Image, name: str = "image") -> Image.Image:
    """RGB view of an image; RGBA is composited onto white, 16-bit greyscale scaled to 8 bit (other modes
    are plainly converted)."""
    if img.mode.startswith("I") or img.mode == "F":
        img = _to_8bit(img, name)
    if img.mode == "RGBA":
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img)
    return img.convert("RGB")


def to_tensor(img: Image.Image) -> torch.Tensor:
    """HWC uint8 PIL image -> CHW float32 in [0, 1] (torchvision ToTensor, without torchvision)."""
    array = np.asarray(img, dtype=np.uint8)
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div(255)


def _round_to_patch(value: float, patch: int = PATCH_SIZE) -> int:
    """Python `round` (banker's on .5) to a multiple of `patch`, as load_fn.py does; at least one patch."""
    return max(patch, round(value / patch) * patch)


def program_patch_size(height: int, width: int) -> int:
    """The patch a compiled (H, W) is built on: 14 (VGGT) when both are multiples of 14, else 16 (VGGT-Ω)."""
    return next((p for p in PATCH_SIZES if height % p == 0 and width % p == 0), PATCH_SIZE)


def _official_layout(width: int, height: int, mode: str, target_size: int) -> _Layout:
    """Where load_fn.py puts an image of this size (before the mixed-shape padding)."""
    if mode == "crop":
        new_w, new_h = target_size, _round_to_patch(height * (target_size / width))
        crop_top = (new_h - target_size) // 2 if new_h > target_size else 0
        return _Layout(new_w, new_h, 0, -crop_top, min(new_h, target_size), new_w)
    if width >= height:
        new_w, new_h = target_size, _round_to_patch(height * (target_size / width))
    else:
        new_w, new_h = _round_to_patch(width * (target_size / height)), target_size
    pad_left, pad_top = (target_size - new_w) // 2, (target_size - new_h) // 2
    return _Layout(new_w, new_h, pad_left, pad_top, target_size, target_size)


def _fixed_shape_layout(width: int, height: int, mode: str, out_h: int, out_w: int) -> _Layout:
    """Fit a width x height image to out_h x out_w with the official rules generalised.

    crop: width -> out_w and height -> round(h*out_w/w/14)*14 as load_fn.py does; if that is at least
    out_h, centre-crop rows. Otherwise the image is wider than the target: height -> out_h keeping
    the aspect ratio, centre-crop columns. pad: fit the longer side relative to the box, round the
    other to a multiple of 14 (at most the box), pad white with pad//2 before.
    For (out_h, out_w) equal to what load_fn.py produces for the image, the result is identical.
    Rounding is to the program's patch (`program_patch_size`), so 16 for a VGGT-Ω shape.
    """
    patch = program_patch_size(out_h, out_w)
    if mode == "crop":
        new_h = _round_to_patch(height * (out_w / width), patch)
        if new_h >= out_h:
            return _Layout(out_w, new_h, 0, -((new_h - out_h) // 2), out_h, out_w)
        new_w = max(out_w, round(width * (out_h / height)))
        return _Layout(new_w, out_h, -((new_w - out_w) // 2), 0, out_h, out_w)
    if width * out_h >= height * out_w:
        new_w, new_h = out_w, min(out_h, _round_to_patch(height * (out_w / width), patch))
    else:
        new_w, new_h = min(out_w, _round_to_patch(width * (out_h / height), patch)), out_h
    return _Layout(new_w, new_h, (out_w - new_w) // 2, (out_h - new_h) // 2, out_h, out_w)


def _apply_layout(img: Image.Image, layout: _Layout) -> tuple[torch.Tensor, PixelTransform]:
    """BICUBIC-resize, then crop/pad (white) into the canvas; return the tensor and its transform."""
    resized = to_tensor(img.resize((layout.resize_w, layout.resize_h), Image.Resampling.BICUBIC))
    tensor = _place(resized, layout.out_h, layout.out_w, layout.offset_x, layout.offset_y)
    transform = PixelTransform(
        layout.resize_w / img.width,
        layout.resize_h / img.height,
        float(layout.offset_x),
        float(layout.offset_y),
        (img.height, img.width),
        (layout.out_h, layout.out_w),
    )
    return tensor, transform


def _place(src: torch.Tensor, out_h: int, out_w: int, offset_x: int, offset_y: int) -> torch.Tensor:
    """Put a [3, h, w] tensor at (offset_x, offset_y) in a white [3, out_h, out_w] canvas."""
    canvas = torch.ones((src.shape[0], out_h, out_w), dtype=src.dtype)
    x0, y0 = max(offset_x, 0), max(offset_y, 0)
    x1, y1 = min(out_w, offset_x + src.shape[2]), min(out_h, offset_y + src.shape[1])
    if x1 > x0 and y1 > y0:
        canvas[:, y0:y1, x0:x1] = src[:, y0 - offset_y : y1 - offset_y, x0 - offset_x : x1 - offset_x]
    return canvas


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise UserError(f"unknown preprocessing mode {mode!r}; use 'crop' or 'pad'")


def _check_paths(paths: Sequence[str | os.PathLike]) -> list[str | os.PathLike]:
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    paths = list(paths)
    if not paths:
        raise UserError("no images given; pass at least one image path")
    return paths


def load_and_preprocess_images_with_transforms(
    paths: Sequence[str | os.PathLike], mode: str = "crop", target_size: int = OFFICIAL_TARGET_SIZE
) -> tuple[torch.Tensor, list[PixelTransform]]:
    """`load_and_preprocess_images`, plus each image's pixel transform (original -> tensor)."""
    _check_mode(mode)
    tensors: list[torch.Tensor] = []
    transforms: list[PixelTransform] = []
    for path in _check_paths(paths):
        img = open_rgb(path)
        tensor, transform = _apply_layout(img, _official_layout(img.width, img.height, mode, target_size))
        tensors.append(tensor)
        transforms.append(transform)
    return pad_to_common_size(tensors, transforms)


def pad_to_common_size(
    tensors: list[torch.Tensor], transforms: list[PixelTransform]
) -> tuple[torch.Tensor, list[PixelTransform]]:
    """Stack [3, h, w] images; if their shapes differ, pad each white (pad // 2 before) to the largest
    H and W with a warning, as both official loaders (VGGT, VGGT-Ω) do."""
    shapes = {tuple(t.shape[1:]) for t in tensors}
    if len(shapes) > 1:
        warnings.warn(
            f"images have different shapes {sorted(shapes)}; padding them white to the largest", stacklevel=3
        )
        max_h = max(h for h, _ in shapes)
        max_w = max(w for _, w in shapes)
        for i, tensor in enumerate(tensors):
            dy, dx = (max_h - tensor.shape[1]) // 2, (max_w - tensor.shape[2]) // 2
            tensors[i] = _place(tensor, max_h, max_w, dx, dy)
            transforms[i] = transforms[i].then_offset(dx, dy, (max_h, max_w))
    return torch.stack(tensors), transforms


def load_and_preprocess_images(
    paths: Sequence[str | os.PathLike], mode: str = "crop", target_size: int = OFFICIAL_TARGET_SIZE
) -> torch.Tensor:
    """Load images as the official VGGT loader does: [N, 3, H, W] float32 in [0, 1].

    crop: width -> target_size, height -> round(h*target/w/14)*14, centre-crop rows to target_size.
    pad: longest side -> target_size, pad white (pad//2 before) to target_size x target_size.
    Images that end up with different shapes are padded white to the largest H and W (warning).
    """
    return load_and_preprocess_images_with_transforms(paths, mode, target_size)[0]


def check_compiled_shape(height: int, width: int) -> None:
    """A compiled program's (H, W) must be positive multiples of a patch: 14 (VGGT) or 16 (VGGT-Ω)."""
    if (
        height <= 0
        or width <= 0
        or height % program_patch_size(height, width)
        or width % program_patch_size(height, width)
    ):
        raise UserError(
            f"image size {height}x{width} is not a multiple of 14 (VGGT) or 16 (VGGT-Ω); "
            "pick e.g. 392x518 or 384x512"
        )


def preprocess_image_to_shape(
    image: Image.Image | str | os.PathLike, height: int, width: int, mode: str = "crop"
) -> tuple[torch.Tensor, PixelTransform]:
    """Fit one image to a fixed (height, width): [3, H, W] in [0, 1] and the transform applied."""
    _check_mode(mode)
    check_compiled_shape(height, width)
    img = as_rgb(image) if isinstance(image, Image.Image) else open_rgb(image)
    return _apply_layout(img, _fixed_shape_layout(img.width, img.height, mode, height, width))


def load_images_to_shape(
    paths: Sequence[str | os.PathLike], height: int, width: int, mode: str = "crop"
) -> tuple[torch.Tensor, list[PixelTransform]]:
    """Fit images to the fixed shape of a compiled program: [N, 3, H, W] and one transform each."""
    results = [preprocess_image_to_shape(path, height, width, mode) for path in _check_paths(paths)]
    return torch.stack([tensor for tensor, _ in results]), [transform for _, transform in results]
