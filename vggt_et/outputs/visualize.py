"""Depth maps as colour PNGs, and the input | ground truth | prediction | error picture (matplotlib
colour-map tables and PIL only: no pyplot, no window)."""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

from vggt_et.utils.files import atomic_output_path


def _numpy(array) -> np.ndarray:
    return np.asarray(array.detach().cpu() if hasattr(array, "detach") else array, dtype=np.float64)


def _colour(values: np.ndarray, valid: np.ndarray, low: float, high: float, cmap: str) -> np.ndarray:
    """RGB uint8 of `values` through `cmap` over [low, high] (clipped); pixels not `valid` are black."""
    from matplotlib import colormaps  # lazy: importing matplotlib costs ~0.2 s

    rgb = np.zeros(values.shape + (3,), dtype=np.uint8)
    scaled = np.clip((values[valid] - low) / max(high - low, 1e-12), 0.0, 1.0)
    rgb[valid] = colormaps[cmap](scaled, bytes=True)[:, :3]
    return rgb


def _inverse(depth: np.ndarray, valid: np.ndarray) -> np.ndarray:
    inverse = np.zeros_like(depth)
    inverse[valid] = 1.0 / depth[valid]
    return inverse


def _depth_map(depth) -> np.ndarray:
    """[H, W] or [H, W, 1] (or, with a leading frame axis, [S, H, W] / [S, H, W, 1]) without the channel."""
    depth = _numpy(depth)
    return depth[..., 0] if depth.ndim in (3, 4) and depth.shape[-1] == 1 else depth


def colorize_depth(depth, conf=None, *, conf_drop_fraction: float = 0.1, cmap: str = "turbo") -> np.ndarray:
    """Depth [H, W] (or [H, W, 1]) -> RGB uint8 [H, W, 3]; near is warm, far is cold.

    Colours follow inverse depth between its 2nd and 98th percentiles, so one far outlier does not
    wash the picture out. Pixels with non-finite or non-positive depth, and (when `conf` is given)
    the `conf_drop_fraction` least confident pixels, are black.
    """
    depth = _depth_map(depth)
    if depth.ndim != 2:
        raise ValueError(f"colorize_depth: expected a [H, W] depth map, got shape {depth.shape}")
    valid = np.isfinite(depth) & (depth > 0)
    if conf is not None:
        conf = _numpy(conf).reshape(depth.shape)
        if conf_drop_fraction > 0 and valid.any():
            valid &= conf >= np.quantile(conf[valid], conf_drop_fraction)
    if not valid.any():
        return np.zeros(depth.shape + (3,), dtype=np.uint8)
    inverse = _inverse(depth, valid)
    low, high = np.percentile(inverse[valid], [2, 98])
    return _colour(inverse, valid, low, high, cmap)


def _save_png(path: str | os.PathLike, rgb: np.ndarray) -> None:
    with atomic_output_path(path, suffix=".png") as tmp:
        Image.fromarray(rgb).save(tmp, format="PNG")


def depth_to_color_png(path: str | os.PathLike, depth, conf=None, **kwargs) -> np.ndarray:
    """Write `colorize_depth(depth, conf, **kwargs)` to `path` as a PNG (atomically); return the RGB."""
    rgb = colorize_depth(depth, conf, **kwargs)
    _save_png(path, rgb)
    return rgb


SIDE_BY_SIDE_TITLES = ("input", "ground-truth depth", "predicted depth", "absolute error")
TITLE_HEIGHT = 18  # px: the band holding the column titles
GAP = 4  # px of white between tiles
MIN_TILE_WIDTH = 160  # px: small frames are enlarged (nearest neighbour, whole factor) up to this width


def tile_scale(width: int) -> int:
    """The whole enlargement factor `side_by_side` applies to frames `width` pixels wide by default."""
    return max(1, -(-MIN_TILE_WIDTH // width))


def side_by_side_size(frames: int, height: int, width: int, scale: int | None = None) -> tuple[int, int]:
    """(height, width) in pixels of `side_by_side` for `frames` frames of height × width."""
    scale = scale or tile_scale(width)
    return (
        TITLE_HEIGHT + frames * height * scale + (frames - 1) * GAP,
        len(SIDE_BY_SIDE_TITLES) * width * scale + (len(SIDE_BY_SIDE_TITLES) - 1) * GAP,
    )


def depth_error(depth_true, depth_pred, *, align: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(prediction, |prediction - truth|, where the error is defined), per frame [S, H, W].

    With `align` the prediction is first median-scaled to the truth per frame (depth from VGGT has no
    metric scale; the same alignment as the compare metrics). The error is defined where the truth is
    positive and finite (0 marks no surface) and the prediction finite; it is 0 elsewhere."""
    from vggt_et.runtime.metrics import median_scale_aligned

    truth, pred = _depth_map(depth_true), _depth_map(depth_pred)
    if truth.ndim != 3 or pred.shape != truth.shape:
        raise ValueError(
            f"depth_error: expected ground truth and prediction [S, H, W] of one shape, got "
            f"{truth.shape} and {pred.shape}"
        )
    if align:
        pred = median_scale_aligned(pred, truth)
    defined = np.isfinite(truth) & (truth > 0) & np.isfinite(pred)
    with np.errstate(invalid="ignore"):  # inf - inf where undefined: masked out
        error = np.where(defined, np.abs(pred - truth), 0.0)
    return pred, error, defined


def side_by_side(
    images,
    depth_true,
    depth_pred,
    *,
    align: bool = True,
    scale: int | None = None,
    cmap: str = "turbo",
    error_cmap: str = "magma",
) -> np.ndarray:
    """One row per frame: input | ground-truth depth | predicted depth | absolute error -> RGB uint8.

    `images` [S, H, W, 3] (floats in [0, 1] or uint8), `depth_true` and `depth_pred` [S, H, W] (or with a
    trailing 1). The prediction is median-scaled to the truth per frame (`align`). Ground truth and
    prediction share one colour scale per row (inverse depth between the truth's 2nd and 98th percentiles,
    near is warm, as `colorize_depth`); the error has its own, from 0 (the colour map's first colour) to
    its 98th percentile. Black: pixels without ground truth (depth 0) in the truth and error tiles, and
    non-positive predictions in the prediction tile. Frames are enlarged by a whole `scale` (default `tile_scale(W)`); the size is
    `side_by_side_size(S, H, W, scale)`, column titles in a band on top.
    """
    pred, error, defined = depth_error(depth_true, depth_pred, align=align)
    truth = _depth_map(depth_true)
    pictures = np.asarray(images)
    frames, height, width = truth.shape
    if pictures.shape != (frames, height, width, 3):
        raise ValueError(
            f"side_by_side: expected images [S, H, W, 3] = {[frames, height, width, 3]}, got {list(pictures.shape)}"
        )
    if pictures.dtype != np.uint8:
        pictures = (np.clip(pictures.astype(np.float64), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    scale = scale or tile_scale(width)
    rows = []
    for s in range(frames):
        has_truth = np.isfinite(truth[s]) & (truth[s] > 0)
        has_pred = np.isfinite(pred[s]) & (pred[s] > 0)
        reference = has_truth if has_truth.any() else has_pred
        base = truth[s] if has_truth.any() else pred[s]
        low, high = (
            np.percentile(_inverse(base, reference)[reference], [2, 98]) if reference.any() else (0, 1)
        )
        err_high = float(np.percentile(error[s][defined[s]], 98)) if defined[s].any() else 0.0
        rows.append(
            [
                pictures[s],
                _colour(_inverse(truth[s], has_truth), has_truth, low, high, cmap),
                _colour(_inverse(pred[s], has_pred), has_pred, low, high, cmap),
                _colour(error[s], defined[s], 0.0, err_high, error_cmap),
            ]
        )
    return _compose(rows, scale)


def _compose(rows: list[list[np.ndarray]], scale: int) -> np.ndarray:
    """Tiles (equal sizes) on a white canvas, enlarged by `scale`, GAP apart, titles in a top band."""
    from PIL import ImageDraw, ImageFont

    tile_h, tile_w = rows[0][0].shape[0] * scale, rows[0][0].shape[1] * scale
    size = side_by_side_size(len(rows), rows[0][0].shape[0], rows[0][0].shape[1], scale)
    canvas = np.full(size + (3,), 255, dtype=np.uint8)
    for r, row in enumerate(rows):
        top = TITLE_HEIGHT + r * (tile_h + GAP)
        for c, tile in enumerate(row):
            left = c * (tile_w + GAP)
            canvas[top : top + tile_h, left : left + tile_w] = tile.repeat(scale, 0).repeat(scale, 1)
    picture = Image.fromarray(canvas)
    draw, font = ImageDraw.Draw(picture), ImageFont.load_default()
    for c, title in enumerate(SIDE_BY_SIDE_TITLES):
        left = c * (tile_w + GAP) + max(0.0, (tile_w - draw.textlength(title, font=font)) / 2)
        draw.text((left, 3), title, fill=(0, 0, 0), font=font)
    return np.asarray(picture)


def side_by_side_png(path: str | os.PathLike, images, depth_true, depth_pred, **kwargs) -> np.ndarray:
    """Write `side_by_side(images, depth_true, depth_pred, **kwargs)` to `path` (atomically); return it."""
    rgb = side_by_side(images, depth_true, depth_pred, **kwargs)
    _save_png(path, rgb)
    return rgb
