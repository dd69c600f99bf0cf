"""Depth maps as colour PNGs (matplotlib colour-map tables only: no pyplot, no window)."""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

from vggt_et.utils.files import atomic_output_path


def colorize_depth(depth, conf=None, *, conf_drop_fraction: float = 0.1, cmap: str = "turbo") -> np.ndarray:
    """Depth [H, W] (or [H, W, 1]) -> RGB uint8 [H, W, 3]; near is warm, far is cold.

    Colours follow inverse depth between its 2nd and 98th percentiles, so one far outlier does not
    wash the picture out. Pixels with non-finite or non-positive depth, and (when `conf` is given)
    the `conf_drop_fraction` least confident pixels, are black.
    """
    from matplotlib import colormaps  # lazy: importing matplotlib costs ~0.2 s

    depth = np.asarray(depth.detach().cpu() if hasattr(depth, "detach") else depth, dtype=np.float64)
    if depth.ndim == 3 and depth.shape[-1] == 1:
        depth = depth[..., 0]
    if depth.ndim != 2:
        raise ValueError(f"colorize_depth: expected a [H, W] depth map, got shape {depth.shape}")
    valid = np.isfinite(depth) & (depth > 0)
    if conf is not None:
        conf = np.asarray(conf.detach().cpu() if hasattr(conf, "detach") else conf, dtype=np.float64)
        conf = conf.reshape(depth.shape)
        if conf_drop_fraction > 0 and valid.any():
            valid &= conf >= np.quantile(conf[valid], conf_drop_fraction)
    rgb = np.zeros(depth.shape + (3,), dtype=np.uint8)
    if not valid.any():
        return rgb
    inverse = np.zeros_like(depth)
    inverse[valid] = 1.0 / depth[valid]
    low, high = np.percentile(inverse[valid], [2, 98])
    scaled = np.clip((inverse - low) / max(high - low, 1e-12), 0.0, 1.0)
    rgb[valid] = colormaps[cmap](scaled[valid], bytes=True)[:, :3]
    return rgb


def depth_to_color_png(path: str | os.PathLike, depth, conf=None, **kwargs) -> np.ndarray:
    """Write `colorize_depth(depth, conf, **kwargs)` to `path` as a PNG (atomically); return the RGB."""
    rgb = colorize_depth(depth, conf, **kwargs)
    with atomic_output_path(path, suffix=".png") as tmp:
        Image.fromarray(rgb).save(tmp, format="PNG")
    return rgb
