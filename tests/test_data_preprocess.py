"""Image preprocessing: the official rules (shapes, rounding, crop, pad, alpha) and fixed-shape transforms."""

import numpy as np
import pytest
import torch
from PIL import Image

from vggt_et.data.preprocess import (
    load_and_preprocess_images,
    load_and_preprocess_images_with_transforms,
    load_images_to_shape,
    preprocess_image_to_shape,
)
from vggt_et.utils.errors import UserError


def _noise_image(path, width, height, seed=0):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)
    return path


def _pil_reference(path, width, height):
    """What the official loader computes before cropping/padding: BICUBIC resize, /255."""
    resized = Image.open(path).convert("RGB").resize((width, height), Image.Resampling.BICUBIC)
    return torch.from_numpy(np.asarray(resized).copy()).permute(2, 0, 1).float() / 255


def test_crop_mode_landscape_resizes_width_to_518(tmp_path):
    path = _noise_image(tmp_path / "a.png", 400, 300)  # 300*518/400/14 = 27.75 -> 28 patches -> 392
    out = load_and_preprocess_images([path])
    assert out.shape == (1, 3, 392, 518) and out.dtype == torch.float32
    torch.testing.assert_close(out[0], _pil_reference(path, 518, 392), atol=0, rtol=0)


def test_crop_mode_portrait_centre_crops_rows(tmp_path):
    path = _noise_image(tmp_path / "p.png", 300, 400)  # height 400*518/300 -> 49 patches = 686, crop 84
    out = load_and_preprocess_images([path], mode="crop")
    assert out.shape == (1, 3, 518, 518)
    torch.testing.assert_close(out[0], _pil_reference(path, 518, 686)[:, 84 : 84 + 518], atol=0, rtol=0)


def test_crop_height_uses_python_bankers_rounding(tmp_path):
    # 21 * 518 / 74 / 14 = 10.5 exactly: Python round gives 10 (140 px); round-half-up would give 154.
    path = _noise_image(tmp_path / "r.png", 74, 21)
    assert load_and_preprocess_images([path]).shape == (1, 3, 140, 518)


def test_pad_mode_pads_white_with_half_before(tmp_path):
    wide = _noise_image(tmp_path / "w.png", 400, 300)
    tall = _noise_image(tmp_path / "t.png", 300, 400, seed=1)
    out = load_and_preprocess_images([wide, tall], mode="pad")
    assert out.shape == (2, 3, 518, 518)
    # wide: 518 x 392, 126 rows of padding -> 63 above, 63 below
    assert (out[0, :, :63] == 1).all() and (out[0, :, 63 + 392 :] == 1).all()
    torch.testing.assert_close(out[0, :, 63 : 63 + 392], _pil_reference(wide, 518, 392), atol=0, rtol=0)
    # tall: 392 x 518, padding left/right
    assert (out[1, :, :, :63] == 1).all() and (out[1, :, :, 63 + 392 :] == 1).all()
    torch.testing.assert_close(out[1, :, :, 63 : 63 + 392], _pil_reference(tall, 392, 518), atol=0, rtol=0)


def test_rgba_is_composited_on_white(tmp_path):
    Image.new("RGBA", (28, 28), (255, 0, 0, 0)).save(tmp_path / "clear.png")
    Image.new("RGBA", (28, 28), (0, 0, 0, 128)).save(tmp_path / "half.png")
    out = load_and_preprocess_images([tmp_path / "clear.png", tmp_path / "half.png"])
    assert torch.equal(out[0], torch.ones_like(out[0]))
    torch.testing.assert_close(out[1], torch.full_like(out[1], 127 / 255), atol=1.01 / 255, rtol=0)


def test_mixed_shapes_padded_white_to_the_largest_with_a_warning(tmp_path):
    wide = _noise_image(tmp_path / "w.png", 400, 300)
    tall = _noise_image(tmp_path / "t.png", 300, 400)
    with pytest.warns(UserWarning, match="different shapes"):
        out, transforms = load_and_preprocess_images_with_transforms([wide, tall])
    assert out.shape == (2, 3, 518, 518)
    assert (out[0, :, :63] == 1).all() and (out[0, :, 455:] == 1).all()
    torch.testing.assert_close(out[0, :, 63:455], _pil_reference(wide, 518, 392), atol=0, rtol=0)
    assert transforms[0].offset_y == 63 and transforms[0].out_size_hw == (518, 518)


def test_bad_inputs_raise_user_errors(tmp_path):
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(UserError, match="notes.txt"):
        load_and_preprocess_images([tmp_path / "notes.txt"])
    with pytest.raises(UserError, match="not found"):
        load_and_preprocess_images([tmp_path / "missing.jpg"])
    with pytest.raises(UserError, match="mode"):
        load_and_preprocess_images([tmp_path / "notes.txt"], mode="stretch")
    with pytest.raises(UserError, match="no images"):
        load_and_preprocess_images([])
    with pytest.raises(UserError, match="multiple of 14"):
        preprocess_image_to_shape(Image.new("RGB", (10, 10)), 100, 140)


@pytest.mark.parametrize(
    ("size_wh", "shape_hw", "mode"),
    [((400, 300), (392, 518), "crop"), ((300, 400), (518, 518), "crop"), ((400, 300), (518, 518), "pad")],
)
def test_fixed_shape_equals_official_when_shapes_agree(tmp_path, size_wh, shape_hw, mode):
    path = _noise_image(tmp_path / "x.png", *size_wh)
    fixed, _ = load_images_to_shape([path], *shape_hw, mode=mode)
    assert torch.equal(fixed, load_and_preprocess_images([path], mode=mode))


def _blob_image(width, height, u, v):
    """Dark image, smooth bright blob centred on pixel (u, v): resampling keeps its centroid."""
    rows, cols = np.mgrid[0:height, 0:width]
    blob = 200 * np.exp(-((cols - u) ** 2 + (rows - v) ** 2) / (2 * 3.0**2))
    return Image.fromarray(np.repeat(np.round(20 + blob).astype(np.uint8)[..., None], 3, axis=2))


def _centroid(tensor):
    weight = (tensor.mean(0).numpy() - 21 / 255).clip(0)
    weight[tensor.mean(0).numpy() > 0.99] = 0  # ignore white padding
    rows, cols = np.mgrid[0 : weight.shape[0], 0 : weight.shape[1]]
    return np.array([(cols * weight).sum(), (rows * weight).sum()]) / weight.sum()


@pytest.mark.parametrize(
    ("size_wh", "shape_hw", "mode"),
    [
        ((240, 90), (56, 84), "crop"),  # wider than the target: crop columns
        ((90, 240), (56, 84), "crop"),  # taller: crop rows
        ((240, 90), (84, 84), "pad"),
        ((100, 160), (70, 56), "crop"),
    ],
)
def test_transform_follows_the_pixels(size_wh, shape_hw, mode):
    """A feature at original pixel (u, v) appears where the returned transform says it does."""
    width, height = size_wh
    u, v = int(width * 0.55), int(height * 0.45)
    out, transform = preprocess_image_to_shape(_blob_image(width, height, u, v), *shape_hw, mode=mode)
    assert out.shape == (3, *shape_hw) and transform.out_size_hw == shape_hw
    np.testing.assert_allclose(_centroid(out), transform.apply_to_pixels(np.array([u, v])), atol=0.05)
    # Intrinsics follow: projecting with A @ K gives the transformed pixel of projecting with K.
    k = np.array([[150.0, 0, width / 2], [0, 140.0, height / 2], [0, 0, 1]])
    point = np.array([0.3, -0.2, 2.0])
    uv = (k @ point)[:2] / point[2]
    uv_new = (transform.apply_to_intrinsics(k) @ point)[:2] / point[2]
    np.testing.assert_allclose(uv_new, transform.apply_to_pixels(uv), atol=1e-9)


def test_warp_nearest_picks_the_nearest_source_pixel_and_fills_padding():
    height, width = 30, 50
    codes = (np.arange(height)[:, None] * 1000 + np.arange(width)[None, :]).astype(np.float32)
    image = Image.fromarray(np.zeros((height, width, 3), np.uint8))
    for mode in ("crop", "pad"):
        _, transform = preprocess_image_to_shape(image, 42, 42, mode=mode)
        warped = transform.warp_nearest(codes, fill=-1.0)
        inside = warped >= 0
        assert inside.any() and (mode == "crop") == inside.all()
        src = np.stack([warped[inside] % 1000, warped[inside] // 1000], -1)
        mapped = transform.apply_to_pixels(src)
        rows, cols = np.nonzero(inside)
        err = np.abs(mapped - np.stack([cols, rows], -1))
        assert (err <= 0.5 * np.array([transform.scale_x, transform.scale_y]) + 1e-9).all()
    # A depth map at half the image resolution follows the same geometry.
    half = transform.for_input_size(height // 2, width // 2)
    assert half.warp_nearest(codes[::2, ::2]).shape == (42, 42)
