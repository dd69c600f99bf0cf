"""VGGT-Ω's loader: aspect crop into [0.5, 2], balanced / max_size target shapes on the 16-pixel patch
(hand-computed), transforms that follow the crop and resize, and white padding of mixed shapes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from vggt_et.data.preprocess import check_compiled_shape, program_patch_size
from vggt_et.data.preprocess_omega import aspect_crop_box, load_and_preprocess_images_omega, target_shape
from vggt_et.utils.errors import UserError


def _image(tmp_path, name: str, width: int, height: int) -> str:
    rng = np.random.default_rng(width * height)
    path = tmp_path / f"{name}.png"
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)
    return str(path)


def test_aspect_crop_box_by_hand() -> None:
    assert aspect_crop_box(1000, 300) == (200, 0, 800, 300)  # 0.3 < 0.5: keep 600 columns, centred
    assert aspect_crop_box(300, 900) == (0, 150, 300, 750)  # 3 > 2: keep 600 rows, centred
    assert aspect_crop_box(640, 480) == (0, 0, 640, 480)


def test_target_shapes_by_hand() -> None:
    # balanced, 512/16 → 1024 patches: aspect 0.5 → w = √2048 = 45.25 → 45, h = 1024/45.25 = 22.6 → 23
    assert target_shape(0.5, "balanced", 512, 16) == (368, 720)
    assert target_shape(2.0, "balanced", 512, 16) == (720, 368)
    assert target_shape(0.75, "balanced", 512, 16) == (448, 592)  # w = 36.95 → 37, h = 27.7 → 28
    assert target_shape(0.75, "max_size", 512, 16) == (384, 512)
    assert target_shape(2.0, "max_size", 512, 16) == (512, 256)


def test_loader_crops_resizes_and_maps_pixels(tmp_path) -> None:
    images, transforms = load_and_preprocess_images_omega([_image(tmp_path, "wide", 1000, 300)])
    assert images.shape == (1, 3, 368, 720) and images.dtype == torch.float32
    assert 0.0 <= float(images.min()) and float(images.max()) <= 1.0
    t = transforms[0]
    assert t.out_size_hw == (368, 720) and t.in_size_hw == (300, 1000)
    # The crop's left edge (x = 200 in the original) lands on the tensor's left edge, its right edge on 720.
    assert t.scale_x * 200 + t.offset_x == pytest.approx(0.0)
    assert t.scale_x * 800 + t.offset_x == pytest.approx(720.0)
    assert t.scale_y * 300 + t.offset_y == pytest.approx(368.0)


def test_mixed_shapes_are_padded_white(tmp_path) -> None:
    paths = [_image(tmp_path, "wide", 1000, 300), _image(tmp_path, "tall", 300, 900)]
    with pytest.warns(UserWarning, match="different shapes"):
        images, transforms = load_and_preprocess_images_omega(paths, mode="max_size")
    assert images.shape == (2, 3, 512, 512)
    assert torch.equal(images[0, :, :128], torch.ones(3, 128, 512))  # 256 rows centred: 128 white above
    assert transforms[0].offset_y == pytest.approx(128.0)


def test_bad_arguments_are_user_errors(tmp_path) -> None:
    path = _image(tmp_path, "a", 64, 64)
    with pytest.raises(UserError, match="mode"):
        load_and_preprocess_images_omega([path], mode="crop")
    with pytest.raises(UserError, match="multiple of the patch"):
        load_and_preprocess_images_omega([path], image_resolution=500)


def test_compiled_shapes_accept_either_patch() -> None:
    assert program_patch_size(518, 392) == 14 and program_patch_size(512, 384) == 16
    check_compiled_shape(32, 48)
    check_compiled_shape(28, 42)
    with pytest.raises(UserError, match="14 \\(VGGT\\) or 16"):
        check_compiled_shape(30, 48)
