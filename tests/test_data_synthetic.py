"""Synthetic scenes: BlendedMVS layout, determinism, speed, textured images, depth consistent across views."""

import time

import numpy as np
import pytest
from PIL import Image

from vggt_et.data.blendedmvs import list_scenes
from vggt_et.data.cams import read_cam_txt
from vggt_et.data.pfm import read_pfm
from vggt_et.data.synthetic import WALL_Y, write_synthetic_dataset
from vggt_et.outputs.geometry import project_points, unproject_depth_map_to_point_map

HEIGHT, WIDTH, VIEWS = 96, 128, 8


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth_a")
    start = time.perf_counter()
    names = write_synthetic_dataset(root, n_scenes=1, n_views=VIEWS, height=HEIGHT, width=WIDTH, seed=0)
    return root, names, time.perf_counter() - start


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout_and_speed(dataset):
    root, names, seconds = dataset
    assert names == ["synthetic_0_00"]
    assert seconds < 3.0  # typically ~0.3 s; generous for a shared 2-core machine
    (scene,) = list_scenes(root)
    assert scene.view_ids == list(range(VIEWS))
    files = _files(root / names[0])
    for view in range(VIEWS):
        for rel in (
            f"blended_images/{view:08d}.jpg",
            f"blended_images/{view:08d}_masked.jpg",
            f"cams/{view:08d}_cam.txt",
            f"rendered_depth_maps/{view:08d}.pfm",
        ):
            assert rel in files
    assert "cams/pair.txt" in files and not any("/." in name or name.startswith(".") for name in files)
    assert len(scene.pairs) == VIEWS and all(len(n) == VIEWS - 1 for n in scene.pairs.values())
    assert scene.pairs[0][0][0] == 1  # the neighbouring camera on the arc is the best pair


def test_deterministic_for_a_seed(dataset, tmp_path):
    root, names, _ = dataset
    write_synthetic_dataset(tmp_path / "again", n_scenes=1, n_views=VIEWS, height=HEIGHT, width=WIDTH, seed=0)
    assert _files(tmp_path / "again" / names[0]) == _files(root / names[0])
    write_synthetic_dataset(tmp_path / "other", n_scenes=1, n_views=2, height=HEIGHT, width=WIDTH, seed=1)
    other = Image.open(tmp_path / "other" / "synthetic_1_00" / "blended_images" / "00000000.jpg")
    mine = Image.open(root / names[0] / "blended_images" / "00000000.jpg")
    assert np.abs(np.asarray(other, float) - np.asarray(mine, float)).mean() > 10


def test_images_are_textured_and_depth_range_is_recorded(dataset):
    root, names, _ = dataset
    (scene,) = list_scenes(root)
    for view in scene.view_ids:
        image = np.asarray(Image.open(scene.image_path(view)), dtype=float)
        assert image.shape == (HEIGHT, WIDTH, 3) and image.std() > 25
        assert np.abs(np.diff(image, axis=1)).mean() > 8  # fine texture, not flat shading
        depth = read_pfm(scene.depth_path(view))
        valid = depth > 0
        assert valid.mean() > 0.9
        cam = read_cam_txt(scene.cam_path(view))
        assert cam.depth_min <= depth[valid].min() and depth.max() <= cam.depth_max
        assert cam.depth_num == 128
        np.testing.assert_allclose(cam.depth_min + cam.depth_interval * cam.depth_num, cam.depth_max)
        masked = np.asarray(Image.open(root / names[0] / "blended_images" / f"{view:08d}_masked.jpg"), float)
        assert masked[valid].mean() > 20 and (not (~valid).any() or masked[~valid].mean() < 20)


def test_depth_agrees_across_views(dataset):
    """Unproject view i, project into view j: where the point is visible, view j's depth agrees."""
    root, _, _ = dataset
    (scene,) = list_scenes(root)
    cams = [read_cam_txt(scene.cam_path(v)) for v in scene.view_ids]
    depths = np.stack([read_pfm(scene.depth_path(v)) for v in scene.view_ids])
    extrinsics = np.stack([c.extrinsic[:3] for c in cams])
    intrinsics = np.stack([c.intrinsic for c in cams])
    world = unproject_depth_map_to_point_map(depths[..., None], extrinsics, intrinsics)
    for i, j in [(0, 1), (3, 5), (7, 2)]:
        valid = depths[i] > 0
        uv, z = project_points(world[i][valid], extrinsics[j], intrinsics[j])
        cols, rows = np.round(uv[:, 0]).astype(int), np.round(uv[:, 1]).astype(int)
        inside = (cols >= 0) & (cols < WIDTH) & (rows >= 0) & (rows < HEIGHT) & (z > 0)
        seen = depths[j][rows[inside], cols[inside]]
        z = z[inside]
        agree = np.abs(seen - z) < 0.02 * z
        behind = seen > z * 1.02  # view j sees *past* a surface point: impossible unless edge sampling
        assert inside.sum() > 0.3 * valid.sum()
        assert agree.mean() > 0.75, (i, j, agree.mean())
        assert behind.mean() < 0.03, (i, j, behind.mean())
        # Colours agree too where depth does (solid textures, view-independent shading).
        img_i = np.asarray(Image.open(scene.image_path(i)), float)[valid][inside][agree]
        img_j = np.asarray(Image.open(scene.image_path(j)), float)[rows[inside][agree], cols[inside][agree]]
        assert np.median(np.abs(img_i - img_j)) < 40


def test_unprojected_depth_lies_exactly_on_the_ground_and_wall(dataset):
    """Exactness of depth + written cameras: ground pixels unproject to z = 0, wall pixels to y = WALL_Y."""
    root, _, _ = dataset
    (scene,) = list_scenes(root)
    for view in (0, 5):
        cam = read_cam_txt(scene.cam_path(view))
        depth = read_pfm(scene.depth_path(view))
        world = unproject_depth_map_to_point_map(
            depth[None, ..., None], cam.extrinsic[None, :3], cam.intrinsic[None]
        )
        world = world[0][depth > 0].astype(np.float64)
        ground = np.abs(world[:, 2]) < 0.05
        wall = np.abs(world[:, 1] - WALL_Y) < 0.05
        assert ground.sum() > 500 and wall.sum() > 500
        # (box faces also come within 5 cm of those planes near their edges: hence fractions, not max)
        assert (np.abs(world[ground, 2]) < 2e-4).mean() > 0.97
        assert (np.abs(world[wall, 1] - WALL_Y) < 2e-4).mean() > 0.97
