"""Synthetic scenes: BlendedMVS layout, determinism, speed, textured images, depth consistent across views;
the training generator's shapes and camera paths with exact depth."""

import time

import numpy as np
import pytest
import torch
from PIL import Image

from vggt_et.data.blendedmvs import list_scenes
from vggt_et.data.cams import read_cam_txt
from vggt_et.data.pfm import read_pfm
from vggt_et.data.synthetic import (
    CAMERA_PATHS,
    SHAPE_KINDS,
    WALL_Y,
    SceneVariety,
    camera_path,
    synthetic_sample,
    write_synthetic_dataset,
)
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


# --- SceneVariety / synthetic_sample: the training generator -----------------------------------------------


def _surface_distance(shape, points: np.ndarray) -> np.ndarray:
    """Distance of points [N, 3] to the shape's surface, from its analytic signed distance (not the ray test)."""
    if shape.kind == "box":
        local = np.abs(shape.texture_frame(points)) - shape.half_extents
        outside = np.linalg.norm(np.maximum(local, 0), axis=-1)
        return np.abs(outside + np.minimum(local.max(-1), 0))
    if shape.kind == "sphere":
        return np.abs(np.linalg.norm(points - shape.center, axis=-1) - shape.radius)
    if shape.kind == "cylinder":
        radial = np.linalg.norm(points[:, :2] - shape.center[:2], axis=-1) - shape.radius
        axial = np.abs(points[:, 2] - shape.height / 2) - shape.height / 2
        d = np.stack([radial, axial], -1)
        return np.abs(np.linalg.norm(np.maximum(d, 0), axis=-1) + np.minimum(d.max(-1), 0))
    local = (points - shape.center) @ shape.axes.T
    off_plane = (points - shape.center) @ shape.normal
    return np.hypot(off_plane, np.linalg.norm(np.maximum(np.abs(local) - shape.half_size, 0), axis=-1))


@pytest.mark.parametrize("path", CAMERA_PATHS)
@pytest.mark.parametrize("kind", SHAPE_KINDS)
def test_varied_depth_unprojects_onto_the_analytic_surfaces(kind, path):
    """Every valid pixel's depth, unprojected with the sample's own cameras, lies on a surface of the scene
    (ground, wall or one of its objects) to 1e-4 of its depth; the shape under test is seen."""
    variety = SceneVariety(height=42, width=56, objects=(5, 6), shapes=(kind,), paths=(path,))
    for seed in range(5):  # the first seed whose views show the shape
        sample = synthetic_sample([seed, 11], variety, n_views=2)
        valid = sample.valid.numpy()
        world = unproject_depth_map_to_point_map(
            sample.depth.numpy(), sample.extrinsics.numpy(), sample.intrinsics.numpy()
        )[valid].astype(np.float64)
        distances = np.stack(
            [np.abs(world[:, 2]), np.abs(world[:, 1] - WALL_Y)]
            + [_surface_distance(shape, world) for shape in sample.scene.objects]
        )
        depth = sample.depth.numpy()[valid]
        assert (distances.min(0) < 1e-4 * depth).all(), np.max(distances.min(0) / depth)
        np.testing.assert_allclose(sample.world_points.numpy()[valid], world, atol=1e-4 * depth.max())
        on_shape = (distances[2:].min(0) < 1e-4 * depth) & (distances[:2].min(0) > 1e-2)
        if on_shape.sum() > 50:
            break
    else:
        pytest.fail(f"no {kind} seen from a {path} path in 5 seeds")
    assert valid.mean() > 0.5 and {s.kind for s in sample.scene.objects} == {kind} and sample.path == path


def test_camera_paths_move_as_named():
    centres = {}
    for path in CAMERA_PATHS:
        ext, k = camera_path(np.random.default_rng(4), path, 4, 42, 56, (0.7, 1.3))
        centres[path] = np.stack([-e[:3, :3].T @ e[:3, 3] for e in ext])
        assert k.shape == (4, 3, 3) and len(set(k[:, 0, 0])) == 4  # a focal length per view
        np.testing.assert_array_equal(k[:, 0, 0], k[:, 1, 1])
        np.testing.assert_array_equal(k[:, :2, 2], np.tile([28.0, 21.0], (4, 1)))
    assert np.ptp(centres["rotate"], axis=0).max() < 1e-12  # one optical centre, turning
    steps = np.diff(centres["forward"], axis=0)  # walking along a straight line, looking ahead (2° sway)
    ext, _ = camera_path(np.random.default_rng(4), "forward", 4, 42, 56, (0.7, 1.3))
    direction = steps[0] / np.linalg.norm(steps[0])
    assert np.linalg.norm(np.cross(steps, direction), axis=-1).max() < 1e-9
    assert (ext[:, 2, :3] @ direction > np.cos(np.deg2rad(2))).all() and (steps @ direction > 0.1).all()
    assert np.linalg.norm(np.diff(centres["arc"], axis=0), axis=-1).min() > 0.5


def test_samples_are_deterministic_for_a_seed_and_shaped_for_training():
    variety = SceneVariety(height=28, width=42)
    a, b = synthetic_sample(7, variety), synthetic_sample(7, variety)
    for name in ("images", "depth", "extrinsics", "intrinsics", "world_points", "valid"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    views = a.images.shape[0]
    assert 2 <= views <= 4 and a.images.shape == (views, 3, 28, 42) and a.images.dtype == torch.float32
    assert 0 <= a.images.min() and a.images.max() <= 1 and a.images.std() > 0.05
    assert a.depth.shape == a.valid.shape == (views, 28, 42) and a.world_points.shape == (views, 28, 42, 3)
    assert a.extrinsics.shape == (views, 3, 4) and a.intrinsics.shape == (views, 3, 3)
    assert torch.equal(a.valid, a.depth > 0)
    other = synthetic_sample(8, variety, n_views=views)
    assert not torch.equal(other.images, a.images)
    assert synthetic_sample(7, variety, n_views=3).images.shape[0] == 3
    counts = {synthetic_sample(s, variety).images.shape[0] for s in range(12)}
    assert counts == {2, 3, 4}


def test_variety_refuses_bad_ranges():
    for bad in ({"views": (3, 2)}, {"shapes": ("torus",)}, {"paths": ()}, {"focal": (0.0, 1.0)}):
        with pytest.raises(ValueError):
            SceneVariety(**bad)
