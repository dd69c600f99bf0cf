"""Synthetic scenes with exact depth, written in the BlendedMVS layout.

No dataset can be downloaded everywhere this project runs, yet calibration, comparison and tests
need images with known cameras and depth. So: textured boxes on a textured ground in front of a
back wall, ray-cast analytically with numpy from cameras on an arc. Textures are solid (a function
of the 3-D point, shading view-independent), so a surface point has the same colour in every view.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from vggt_et.data.blendedmvs import SYNTHETIC_SCENE_PREFIX
from vggt_et.data.cams import CamFile, write_cam_txt, write_pair_txt
from vggt_et.data.pfm import write_pfm
from vggt_et.utils.files import atomic_output_path

WALL_Y = 3.0
WALL_HALF_WIDTH = 8.0
WALL_HEIGHT = 4.0
GROUND_HALF_SIZE = 8.0
_LIGHT = np.array([0.4, -0.6, 0.7]) / np.linalg.norm([0.4, -0.6, 0.7])
_MIN_T = 1e-6


@dataclass(frozen=True)
class Box:
    """A box resting on the ground: centre (x, y, z), half extents, rotation about the z axis."""

    center: np.ndarray
    half_extents: np.ndarray
    yaw: float


@dataclass(frozen=True)
class Material:
    """Solid texture: base colour modulated by a checkerboard, cell noise and sine stripes."""

    color: np.ndarray
    checker_size: float
    noise_freq: float
    stripe_dirs: np.ndarray  # [k, 3] wave vectors
    stripe_phases: np.ndarray  # [k]


@dataclass(frozen=True)
class SyntheticScene:
    """World is z-up; the ground is z = 0 and the back wall is the plane y = WALL_Y."""

    boxes: list[Box]
    materials: list[Material]  # ground, wall, then one per box


def _random_material(rng: np.random.Generator) -> Material:
    hue = rng.uniform(0, 1)
    color = 0.45 + 0.4 * np.cos(2 * np.pi * (hue + np.array([0.0, 1 / 3, 2 / 3])))
    dirs = rng.normal(size=(3, 3))
    dirs *= rng.uniform(6, 18, size=(3, 1)) / np.linalg.norm(dirs, axis=1, keepdims=True)
    return Material(color, rng.uniform(0.12, 0.3), rng.uniform(14, 28), dirs, rng.uniform(0, 2 * np.pi, 3))


def make_scene(rng: np.random.Generator, n_boxes: int = 4) -> SyntheticScene:
    """A random arrangement of `n_boxes` boxes around the origin, each with its own material."""
    boxes = []
    for _ in range(n_boxes):
        half = rng.uniform([0.2, 0.2, 0.2], [0.55, 0.55, 0.8])
        center = np.array([rng.uniform(-1.6, 1.6), rng.uniform(-0.8, 1.6), half[2]])
        boxes.append(Box(center, half, rng.uniform(0, np.pi)))
    return SyntheticScene(boxes, [_random_material(rng) for _ in range(2 + n_boxes)])


def look_at_extrinsic(center: np.ndarray, target: np.ndarray) -> np.ndarray:
    """4x4 camera-from-world (OpenCV: x right, y down, z forward) for a camera at `center` facing `target`."""
    forward = (target - center) / np.linalg.norm(target - center)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    rot = np.stack([right, down, forward])
    extrinsic = np.eye(4)
    extrinsic[:3, :3] = rot
    extrinsic[:3, 3] = -rot @ center
    return extrinsic


def arc_cameras(
    rng: np.random.Generator, n_views: int, height: int, width: int
) -> tuple[np.ndarray, np.ndarray]:
    """Cameras on an arc in front of the scene, looking at it: ([n, 4, 4] extrinsics, [3, 3] K)."""
    spread = np.deg2rad(rng.uniform(60, 90))
    azimuths = -np.pi / 2 + np.linspace(-spread / 2, spread / 2, n_views) + rng.normal(0, 0.02, n_views)
    radius = rng.uniform(4.0, 5.0)
    target = np.array([0.0, 0.4, 0.4])
    extrinsics = []
    for azimuth in azimuths:
        center = np.array(
            [radius * np.cos(azimuth), radius * np.sin(azimuth), rng.uniform(1.4, 2.2)]
        ) + np.array([0.0, 0.4, 0.0])
        extrinsics.append(look_at_extrinsic(center, target + rng.normal(0, 0.1, 3)))
    focal = rng.uniform(0.85, 1.1) * width
    intrinsic = np.array([[focal, 0, width / 2], [0, focal, height / 2], [0, 0, 1.0]])
    return np.stack(extrinsics), intrinsic


def _hash01(cells: np.ndarray, salt: int) -> np.ndarray:
    """Deterministic pseudo-random value in [0, 1) per integer 3-D cell ([..., 3] int64)."""
    h = (cells[..., 0] * 73856093) ^ (cells[..., 1] * 19349663) ^ (cells[..., 2] * 83492791) ^ salt
    h = (h ^ (h >> 13)) * 1274126177
    h = h ^ (h >> 16)
    return (h & 0xFFFF).astype(np.float64) / 65536.0


def _shade(material: Material, index: int, points: np.ndarray, normals: np.ndarray) -> np.ndarray:
    """Colour [N, 3] of surface points [N, 3] (texture coordinates) with normals [N, 3]."""
    checker = np.floor(points / material.checker_size).astype(np.int64).sum(-1) % 2
    noise = _hash01(np.floor(points * material.noise_freq).astype(np.int64), salt=index * 7919)
    stripes = np.sin(points @ material.stripe_dirs.T + material.stripe_phases).mean(-1)
    albedo = material.color[None] * (0.5 + 0.3 * checker + 0.3 * noise + 0.15 * stripes)[:, None]
    light = 0.45 + 0.55 * np.clip(normals @ _LIGHT, 0.0, 1.0)
    return np.clip(albedo * light[:, None], 0.0, 1.0)


def _intersect_box(box: Box, origin: np.ndarray, dirs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Slab test in the box frame -> (t [N], inf if missed; outward normal [N, 3] in the world frame)."""
    c, s = np.cos(box.yaw), np.sin(box.yaw)
    world_from_box = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    o = (origin - box.center) @ world_from_box  # row vectors: x @ R == R^T x
    d = dirs @ world_from_box
    with np.errstate(divide="ignore", invalid="ignore"):
        t1 = (-box.half_extents - o) / d
        t2 = (box.half_extents - o) / d
    near = np.fmin(t1, t2)
    t_near = near.max(-1)
    t_far = np.fmax(t1, t2).min(-1)
    hit = (t_near <= t_far) & (t_near > _MIN_T)
    axis = near.argmax(-1)
    normal_local = np.zeros_like(d)
    rows = np.arange(len(d))
    normal_local[rows, axis] = -np.sign(d[rows, axis])
    return np.where(hit, t_near, np.inf), normal_local @ world_from_box.T


def render_view(
    scene: SyntheticScene, extrinsic: np.ndarray, intrinsic: np.ndarray, height: int, width: int
) -> tuple[np.ndarray, np.ndarray]:
    """Ray-cast one view -> (RGB uint8 [H, W, 3], depth float32 [H, W], 0 where a ray hits nothing).

    Rays go through integer pixel coordinates (pixel centres, as VGGT unprojects) and are scaled so
    that the ray parameter t is the camera-frame depth z.
    """
    rot, trans = extrinsic[:3, :3], extrinsic[:3, 3]
    origin = -rot.T @ trans
    v, u = np.meshgrid(np.arange(height, dtype=np.float64), np.arange(width, dtype=np.float64), indexing="ij")
    cam_dirs = np.stack(
        [(u - intrinsic[0, 2]) / intrinsic[0, 0], (v - intrinsic[1, 2]) / intrinsic[1, 1], np.ones_like(u)],
        -1,
    ).reshape(-1, 3)
    dirs = cam_dirs @ rot  # R^T d for row vectors
    n_rays = len(dirs)

    candidates_t, candidates_normal = [], []
    with np.errstate(divide="ignore", invalid="ignore"):
        t_ground = np.where(dirs[:, 2] < 0, -origin[2] / dirs[:, 2], np.inf)
        t_wall = np.where(dirs[:, 1] > 0, (WALL_Y - origin[1]) / dirs[:, 1], np.inf)
    ground_pts = origin + t_ground[:, None] * dirs
    t_ground[(np.abs(ground_pts[:, :2]) > GROUND_HALF_SIZE).any(-1) | ~np.isfinite(t_ground)] = np.inf
    wall_pts = origin + t_wall[:, None] * dirs
    wall_out = (
        (np.abs(wall_pts[:, 0]) > WALL_HALF_WIDTH) | (wall_pts[:, 2] < 0) | (wall_pts[:, 2] > WALL_HEIGHT)
    )
    t_wall[wall_out | ~np.isfinite(t_wall)] = np.inf
    candidates_t += [t_ground, t_wall]
    candidates_normal += [
        np.broadcast_to([0.0, 0.0, 1.0], (n_rays, 3)),
        np.broadcast_to([0.0, -1.0, 0.0], (n_rays, 3)),
    ]
    for box in scene.boxes:
        t_box, normal = _intersect_box(box, origin, dirs)
        candidates_t.append(t_box)
        candidates_normal.append(normal)

    all_t = np.stack(candidates_t)  # [objects, rays]
    nearest = all_t.argmin(0)
    t = all_t[nearest, np.arange(n_rays)]
    hit = np.isfinite(t)
    points = origin + np.where(hit, t, 0.0)[:, None] * dirs

    sky = np.clip(0.75 + 0.25 * dirs[:, 2:3] / np.linalg.norm(dirs, axis=1, keepdims=True), 0, 1)
    rgb = np.broadcast_to(sky * np.array([0.55, 0.7, 0.95]), (n_rays, 3)).copy()
    for index, material in enumerate(scene.materials):
        sel = hit & (nearest == index)
        if not sel.any():
            continue
        tex_points = points[sel]
        if index >= 2:  # boxes: texture in the box frame so the checkerboard follows its faces
            box = scene.boxes[index - 2]
            c, s = np.cos(box.yaw), np.sin(box.yaw)
            tex_points = (tex_points - box.center) @ np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
        rgb[sel] = _shade(material, index, tex_points, candidates_normal[index][sel])
    depth = np.where(hit, t, 0.0).astype(np.float32).reshape(height, width)
    image = np.round(rgb.reshape(height, width, 3) * 255).astype(np.uint8)
    return image, depth


def _pair_scores(extrinsics: np.ndarray, max_neighbours: int = 10) -> dict[int, list[tuple[int, float]]]:
    """pair.txt content: neighbours ranked by the angle between viewing directions (smaller = better)."""
    forwards = extrinsics[:, 2, :3]
    pairs = {}
    for i in range(len(extrinsics)):
        cos = np.clip(forwards @ forwards[i], -1.0, 1.0)
        angles = np.degrees(np.arccos(cos))
        order = [j for j in np.argsort(angles, kind="stable") if j != i][:max_neighbours]
        pairs[i] = [(int(j), float(100.0 * np.exp(-angles[j] / 20.0))) for j in order]
    return pairs


def _save_jpeg(path: Path, image: np.ndarray) -> None:
    with atomic_output_path(path, suffix=".jpg") as tmp:
        Image.fromarray(image).save(tmp, format="JPEG", quality=95)


def write_scene(
    scene_dir: str | os.PathLike, seed_sequence: list[int], n_views: int, height: int, width: int
) -> None:
    """Render one scene and write it in the BlendedMVS layout under `scene_dir`."""
    rng = np.random.default_rng(seed_sequence)
    scene = make_scene(rng)
    extrinsics, intrinsic = arc_cameras(rng, n_views, height, width)
    scene_dir = Path(scene_dir)
    for view, extrinsic in enumerate(extrinsics):
        image, depth = render_view(scene, extrinsic, intrinsic, height, width)
        _save_jpeg(scene_dir / "blended_images" / f"{view:08d}.jpg", image)
        _save_jpeg(scene_dir / "blended_images" / f"{view:08d}_masked.jpg", image * (depth > 0)[..., None])
        write_pfm(scene_dir / "rendered_depth_maps" / f"{view:08d}.pfm", depth)
        valid = depth[depth > 0]
        depth_min = float(valid.min()) * 0.95 if valid.size else 0.1
        depth_max = float(valid.max()) * 1.05 if valid.size else 100.0
        depth_num = 128
        cam = CamFile(
            extrinsic, intrinsic, depth_min, (depth_max - depth_min) / depth_num, depth_num, depth_max
        )
        write_cam_txt(scene_dir / "cams" / f"{view:08d}_cam.txt", cam)
    write_pair_txt(scene_dir / "cams" / "pair.txt", _pair_scores(extrinsics))


def write_synthetic_dataset(
    root: str | os.PathLike,
    n_scenes: int = 2,
    n_views: int = 8,
    height: int = 192,
    width: int = 256,
    seed: int = 0,
) -> list[str]:
    """Write `n_scenes` synthetic scenes under `root` in the BlendedMVS layout; return their names.

    Deterministic for a given seed (byte-identical files); scene i uses the random stream (seed, i).
    """
    names = []
    for index in range(n_scenes):
        name = f"{SYNTHETIC_SCENE_PREFIX}{seed}_{index:02d}"
        write_scene(Path(root) / name, [seed, index], n_views, height, width)
        names.append(name)
    return names
