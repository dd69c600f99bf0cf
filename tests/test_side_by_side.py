"""The input | ground-truth depth | predicted depth | error picture (vggt_et.outputs.visualize), on small
hand-made arrays: exact pixel size, one row per frame, and an error column that is zero where the
prediction equals the ground truth."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib import colormaps
from PIL import Image

from vggt_et.outputs.visualize import (
    GAP,
    SIDE_BY_SIDE_TITLES,
    TITLE_HEIGHT,
    depth_error,
    side_by_side,
    side_by_side_png,
    side_by_side_size,
    tile_scale,
)

S, H, W = 3, 10, 12


def _scene() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    images = rng.random((S, H, W, 3))
    truth = np.linspace(1.0, 4.0, S * H * W).reshape(S, H, W)
    truth[:, 0, :] = 0.0  # no surface on the top row
    return images, truth


def _tile(rgb: np.ndarray, row: int, column: int, scale: int) -> np.ndarray:
    top, left = TITLE_HEIGHT + row * (H * scale + GAP), column * (W * scale + GAP)
    return rgb[top : top + H * scale, left : left + W * scale]


def test_size_is_one_row_per_frame() -> None:
    images, truth = _scene()
    assert side_by_side(images, truth, truth, scale=1).shape == (
        TITLE_HEIGHT + S * H + (S - 1) * GAP,
        4 * W + 3 * GAP,
        3,
    )
    scale = tile_scale(W)
    assert scale * W >= 160 > (scale - 1) * W
    assert side_by_side(images, truth, truth).shape[:2] == side_by_side_size(S, H, W)
    assert side_by_side_size(S, H, W, 2) == (TITLE_HEIGHT + S * 2 * H + (S - 1) * GAP, 4 * 2 * W + 3 * GAP)
    assert len(SIDE_BY_SIDE_TITLES) == 4


def test_error_is_zero_where_prediction_equals_truth() -> None:
    images, truth = _scene()
    pred = truth.copy()
    pred[1, 5:8, 4:9] *= 1.5  # wrong in one patch of frame 1
    _, error, defined = depth_error(truth, pred, align=False)
    wrong = np.zeros_like(defined)
    wrong[1, 5:8, 4:9] = True
    assert np.all(error[~wrong] == 0) and np.all(error[wrong] > 0)
    assert not defined[:, 0, :].any() and defined[:, 1:, :].all()
    rgb = side_by_side(images, truth, pred, align=False, scale=2)
    zero = colormaps["magma"](0.0, bytes=True)[:3]
    for s in range(S):
        tile = _tile(rgb, s, 3, 2)[::2, ::2]  # back to one pixel per depth pixel
        right = (~wrong[s]) & defined[s]
        assert (tile[right] == zero).all()
        assert (tile[wrong[s]] != zero).any(-1).all()
        assert (tile[~defined[s]] == 0).all()  # no ground truth: black
        assert np.array_equal(_tile(rgb, s, 0, 2)[::2, ::2], np.round(images[s] * 255).astype(np.uint8))


def test_prediction_is_median_scaled_and_shares_the_truths_colours() -> None:
    images, truth = _scene()
    rgb = side_by_side(images, truth, 2.0 * truth, scale=1)  # twice the truth (exact in binary)
    _, error, _ = depth_error(truth, 2.0 * truth)
    assert np.allclose(error, 0.0)
    for s in range(S):
        valid = truth[s] > 0
        assert np.array_equal(_tile(rgb, s, 1, 1)[valid], _tile(rgb, s, 2, 1)[valid])


def test_png_is_written_and_bad_shapes_are_refused(tmp_path) -> None:
    images, truth = _scene()
    rgb = side_by_side_png(tmp_path / "sbs.png", (images * 255).astype(np.uint8), truth[..., None], truth)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "sbs.png").convert("RGB")), rgb)
    assert not [p for p in tmp_path.iterdir() if p.name != "sbs.png"]  # no temporary file left
    with pytest.raises(ValueError, match="S, H, W, 3"):
        side_by_side(images[:, :, :, :2], truth, truth)
    with pytest.raises(ValueError, match="one shape"):
        side_by_side(images, truth, truth[:2])
