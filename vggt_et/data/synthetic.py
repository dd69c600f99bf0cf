"""Synthetic scenes with exact depth, written in the BlendedMVS layout or generated in memory for training.

No dataset can be downloaded everywhere this project runs, yet calibration, comparison and tests
need images with known cameras and depth. So: textured boxes on a textured ground in front of a
back wall, ray-cast analytically with numpy from cameras on an arc. Textures are solid (a function
of the 3-D point, shading view-independent), so a surface point has the same colour in every view.

Training needs more than one layout seen from one kind of path: `SceneVariety` widens it (boxes,
spheres, upright cylinders and slanted panels; random textures, light and sky; arcs, forward motion
and rotation about the optical centre; 2-4 views; a focal length per view), and `synthetic_sample`
returns one such sample as tensors without writing a file. The defaults of the functions above it
(`make_scene`, `arc_cameras`, `render_view`, `write_synthetic_dataset`) are unchanged, byte for byte.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
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

    kind = "box"

    def _world_from_box(self) -> np.ndarray:
        c, s = np.cos(self.yaw), np.sin(self.yaw)
        return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])

    def intersect(self, origin: np.ndarray, dirs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return _intersect_box(self, origin, dirs)

    def texture_frame(self, points: np.ndarray) -> np.ndarray:
        """Box frame, so the checkerboard follows the faces."""
        return (points - self.center) @ self._world_from_box()


def _circle_roots(
    offset: np.ndarray, dirs: np.ndarray, radius: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Roots t of |offset + t d|² = radius² per ray d (rows of `dirs`; 2-D or 3-D) -> (near, far, real).

    Rays parallel to the axis (d = 0 in a cylinder's plane) have no real root."""
    a = (dirs * dirs).sum(-1)
    b = dirs @ offset
    disc = b * b - a * (offset @ offset - radius**2)
    root = np.sqrt(np.maximum(disc, 0.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        near, far = (-b - root) / a, (-b + root) / a
    return near, far, (disc >= 0) & (a > 0)


class _Centred:
    """Objects whose solid texture lives in their frame translated to `center` (not turned)."""

    center: np.ndarray

    def texture_frame(self, points: np.ndarray) -> np.ndarray:
        return points - self.center


@dataclass(frozen=True)
class Sphere(_Centred):
    """A sphere (resting on the ground or floating above it)."""

    center: np.ndarray
    radius: float

    kind = "sphere"

    def intersect(self, origin: np.ndarray, dirs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Nearest root of |o + t d - c|² = r² in front of the camera -> (t [N], inf if missed; normal)."""
        near, far, hits = _circle_roots(origin - self.center, dirs, self.radius)
        t = np.where(hits & (far > _MIN_T), np.where(near > _MIN_T, near, far), np.inf)
        normal = (origin + np.where(np.isfinite(t), t, 0.0)[:, None] * dirs - self.center) / self.radius
        return t, normal


@dataclass(frozen=True)
class Cylinder(_Centred):
    """An upright cylinder standing on the ground: axis through (x, y) = center[:2], z from 0 to `height`."""

    center: np.ndarray
    radius: float
    height: float

    kind = "cylinder"

    def intersect(self, origin: np.ndarray, dirs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Side (quadratic in x, y, clipped to 0 <= z <= height) and the two caps; the nearest hit."""
        d2 = dirs[:, :2]
        near, far, hits = _circle_roots(origin[:2] - self.center[:2], d2, self.radius)
        sides = np.stack([near, far])  # [2, N]
        with np.errstate(divide="ignore", invalid="ignore"):
            z = origin[2] + sides * dirs[None, :, 2]
            sides = np.where(hits & (sides > _MIN_T) & (z >= 0) & (z <= self.height), sides, np.inf)
            caps = np.stack([(0.0 - origin[2]) / dirs[:, 2], (self.height - origin[2]) / dirs[:, 2]])
        cap_xy = origin[None, None, :2] + caps[..., None] * d2[None] - self.center[:2]
        inside = (cap_xy**2).sum(-1) <= self.radius**2
        caps = np.where(inside & (caps > _MIN_T), caps, np.inf)
        all_t = np.concatenate([sides, caps])  # side near, side far, bottom cap, top cap
        which = all_t.argmin(0)
        t = all_t[which, np.arange(len(dirs))]
        hit_xy = origin[:2] + np.where(np.isfinite(t), t, 0.0)[:, None] * d2 - self.center[:2]
        normal = np.concatenate([hit_xy / self.radius, np.zeros((len(dirs), 1))], axis=1)
        normal[which == 2] = [0.0, 0.0, -1.0]
        normal[which == 3] = [0.0, 0.0, 1.0]
        return t, normal


@dataclass(frozen=True)
class Panel(_Centred):
    """A flat rectangle at any slant: centre, orthonormal in-plane axes [2, 3], half sizes along them [2]."""

    center: np.ndarray
    axes: np.ndarray
    half_size: np.ndarray

    kind = "panel"

    @property
    def normal(self) -> np.ndarray:
        return np.cross(self.axes[0], self.axes[1])

    def intersect(self, origin: np.ndarray, dirs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Plane hit inside the rectangle; the normal faces the camera (the panel has two sides)."""
        normal = self.normal
        facing = dirs @ normal
        with np.errstate(divide="ignore", invalid="ignore"):
            t = ((self.center - origin) @ normal) / facing
        local = (origin + np.where(np.isfinite(t), t, 0.0)[:, None] * dirs - self.center) @ self.axes.T
        inside = (np.abs(local) <= self.half_size).all(-1)
        t = np.where(inside & (t > _MIN_T) & np.isfinite(t), t, np.inf)
        return t, np.where(facing[:, None] > 0, -normal, normal)


class Shape(Protocol):
    """What `render_view` needs of a primitive: a ray test and the frame its solid texture lives in."""

    kind: str

    def intersect(self, origin: np.ndarray, dirs: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...

    def texture_frame(self, points: np.ndarray) -> np.ndarray: ...


DEFAULT_TEXTURE_MIX = (0.5, 0.3, 0.3, 0.15)


@dataclass(frozen=True)
class Material:
    """Solid texture: base colour modulated by a checkerboard, cell noise and sine stripes."""

    color: np.ndarray
    checker_size: float
    noise_freq: float
    stripe_dirs: np.ndarray  # [k, 3] wave vectors
    stripe_phases: np.ndarray  # [k]
    mix: tuple[float, float, float, float] = DEFAULT_TEXTURE_MIX  # base, checker, noise, stripes


@dataclass(frozen=True)
class Lighting:
    """One directional light (unit vector towards it) with ambient and diffuse shares, and the sky colour."""

    direction: tuple[float, float, float] = tuple(_LIGHT)
    ambient: float = 0.45
    diffuse: float = 0.55
    sky: tuple[float, float, float] = (0.55, 0.7, 0.95)


@dataclass(frozen=True)
class SyntheticScene:
    """World is z-up; the ground is z = 0 and the back wall is the plane y = WALL_Y.

    `boxes` then `shapes` are the objects; `materials` holds the ground's, the wall's, then one per object
    in that order."""

    boxes: list[Box]
    materials: list[Material]  # ground, wall, then one per box, then one per shape
    shapes: tuple[Shape, ...] = ()
    lighting: Lighting = field(default_factory=Lighting)

    @property
    def objects(self) -> list[Shape]:
        return [*self.boxes, *self.shapes]


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


def _shade(
    material: Material, index: int, points: np.ndarray, normals: np.ndarray, lighting: Lighting
) -> np.ndarray:
    """Colour [N, 3] of surface points [N, 3] (texture coordinates) with normals [N, 3]."""
    checker = np.floor(points / material.checker_size).astype(np.int64).sum(-1) % 2
    noise = _hash01(np.floor(points * material.noise_freq).astype(np.int64), salt=index * 7919)
    stripes = np.sin(points @ material.stripe_dirs.T + material.stripe_phases).mean(-1)
    base, w_checker, w_noise, w_stripes = material.mix
    albedo = (
        material.color[None] * (base + w_checker * checker + w_noise * noise + w_stripes * stripes)[:, None]
    )
    light = lighting.ambient + lighting.diffuse * np.clip(normals @ np.array(lighting.direction), 0.0, 1.0)
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
    image, depth, _ = _ray_cast(scene, extrinsic, intrinsic, height, width)
    return image, depth


def _ray_cast(
    scene: SyntheticScene, extrinsic: np.ndarray, intrinsic: np.ndarray, height: int, width: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`render_view`, plus the world points [H, W, 3] (float64, zero where a ray hits nothing)."""
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
    objects = scene.objects
    for shape in objects:
        t_shape, normal = shape.intersect(origin, dirs)
        candidates_t.append(t_shape)
        candidates_normal.append(normal)

    all_t = np.stack(candidates_t)  # [objects, rays]
    nearest = all_t.argmin(0)
    t = all_t[nearest, np.arange(n_rays)]
    hit = np.isfinite(t)
    points = origin + np.where(hit, t, 0.0)[:, None] * dirs

    sky = np.clip(0.75 + 0.25 * dirs[:, 2:3] / np.linalg.norm(dirs, axis=1, keepdims=True), 0, 1)
    rgb = np.broadcast_to(sky * np.array(scene.lighting.sky), (n_rays, 3)).copy()
    for index, material in enumerate(scene.materials):
        sel = hit & (nearest == index)
        if not sel.any():
            continue
        tex_points = points[sel]
        if index >= 2:  # objects: texture in their own frame so a box's checkerboard follows its faces
            tex_points = objects[index - 2].texture_frame(tex_points)
        rgb[sel] = _shade(material, index, tex_points, candidates_normal[index][sel], scene.lighting)
    depth = np.where(hit, t, 0.0).astype(np.float32).reshape(height, width)
    image = np.round(rgb.reshape(height, width, 3) * 255).astype(np.uint8)
    return image, depth, (points * hit[:, None]).reshape(height, width, 3)


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


# ---------------------------------------------------------------------------------------------------------
# Variety for training: more shapes, textures, light, camera paths and focal lengths; samples in memory.

SHAPE_KINDS = ("box", "sphere", "cylinder", "panel")
CAMERA_PATHS = ("arc", "forward", "rotate")
_SCENE_CENTER = np.array([0.0, 0.4])  # objects stand within OBJECT_RADIUS of it; cameras stay farther out
OBJECT_RADIUS = 1.7


@dataclass(frozen=True)
class SceneVariety:
    """What `synthetic_sample` draws from; every range is inclusive, every choice uniform.

    Objects stand within OBJECT_RADIUS (plus their own size, at most 0.8) of the scene centre and every
    camera path keeps its centres at least 3.2 away horizontally, so no camera is ever inside an object.
    """

    height: int = 70
    width: int = 98
    views: tuple[int, int] = (2, 4)
    objects: tuple[int, int] = (3, 7)
    shapes: tuple[str, ...] = SHAPE_KINDS
    paths: tuple[str, ...] = CAMERA_PATHS
    focal: tuple[float, float] = (0.7, 1.3)  # focal length / image width, drawn per view

    def __post_init__(self) -> None:
        for name in ("views", "objects", "focal"):
            low, high = getattr(self, name)
            if not 0 < low <= high:
                raise ValueError(f"SceneVariety.{name} must be a range 0 < low <= high, got {(low, high)}")
        if self.views[0] < 1 or self.height < 1 or self.width < 1:
            raise ValueError("SceneVariety: views, height and width must be at least 1")
        for name, allowed in (("shapes", SHAPE_KINDS), ("paths", CAMERA_PATHS)):
            chosen = getattr(self, name)
            if not chosen or not set(chosen) <= set(allowed):
                raise ValueError(f"SceneVariety.{name} must be a non-empty subset of {allowed}, got {chosen}")


@dataclass(frozen=True)
class SyntheticSample:
    """One multi-view sample, as the training losses want it (float32 tensors, S views).

    images [S, 3, H, W] in [0, 1]; depth [S, H, W] (0 where no surface); extrinsics [S, 3, 4] camera-from-world
    (OpenCV axes); intrinsics [S, 3, 3] with the principal point at (W/2, H/2); world_points [S, H, W, 3]
    (0 where no surface); valid [S, H, W] bool, where a ray hit a surface.
    """

    images: torch.Tensor
    depth: torch.Tensor
    extrinsics: torch.Tensor
    intrinsics: torch.Tensor
    world_points: torch.Tensor
    valid: torch.Tensor
    scene: SyntheticScene
    path: str


def _textured_material(rng: np.random.Generator) -> Material:
    """`_random_material` with random weights of its checkerboard, noise and stripes."""
    material = _random_material(rng)
    mix = (rng.uniform(0.3, 0.6), rng.uniform(0.0, 0.45), rng.uniform(0.05, 0.45), rng.uniform(0.0, 0.3))
    return Material(
        material.color,
        material.checker_size,
        material.noise_freq,
        material.stripe_dirs,
        material.stripe_phases,
        mix,
    )


def _random_shape(rng: np.random.Generator, kind: str) -> Shape:
    radius = OBJECT_RADIUS * np.sqrt(rng.uniform(0, 1))
    angle = rng.uniform(0, 2 * np.pi)
    x, y = _SCENE_CENTER + radius * np.array([np.cos(angle), np.sin(angle)])
    if kind == "box":
        half = rng.uniform([0.15, 0.15, 0.15], [0.55, 0.55, 0.8])
        return Box(np.array([x, y, half[2]]), half, rng.uniform(0, np.pi))
    if kind == "sphere":
        r = rng.uniform(0.2, 0.6)
        return Sphere(np.array([x, y, r + rng.choice([0.0, rng.uniform(0.0, 0.6)])]), r)
    if kind == "cylinder":
        return Cylinder(np.array([x, y, 0.0]), rng.uniform(0.15, 0.5), rng.uniform(0.3, 1.6))
    # A panel leaning at 15-75 degrees from upright, turned to any side: a ramp, a roof, a sign.
    yaw, tilt = rng.uniform(0, 2 * np.pi), np.deg2rad(rng.uniform(15, 75))
    across = np.array([np.cos(yaw), np.sin(yaw), 0.0])
    up = np.cos(tilt) * np.array([0.0, 0.0, 1.0]) + np.sin(tilt) * np.cross([0.0, 0.0, 1.0], across)
    half = rng.uniform([0.25, 0.25], [0.8, 0.7])
    return Panel(
        np.array([x, y, half[1] * np.cos(tilt) + rng.uniform(0.0, 0.5)]), np.stack([across, up]), half
    )


def make_varied_scene(rng: np.random.Generator, variety: SceneVariety = SceneVariety()) -> SyntheticScene:
    """A random scene of `variety.objects` objects of `variety.shapes` kinds, random materials and light."""
    count = int(rng.integers(variety.objects[0], variety.objects[1] + 1))
    kinds = [variety.shapes[int(i)] for i in rng.integers(0, len(variety.shapes), count)]
    shapes = tuple(_random_shape(rng, kind) for kind in kinds)
    materials = [_textured_material(rng) for _ in range(2 + count)]
    elevation, azimuth = np.deg2rad(rng.uniform(25, 80)), rng.uniform(0, 2 * np.pi)
    direction = (np.cos(elevation) * np.cos(azimuth), np.cos(elevation) * np.sin(azimuth), np.sin(elevation))
    ambient = rng.uniform(0.25, 0.6)
    lighting = Lighting(
        direction, ambient, rng.uniform(0.8, 1.1) * (1 - ambient), tuple(rng.uniform(0.4, 1.0, 3))
    )
    return SyntheticScene([], materials, shapes, lighting)


def _focal_intrinsics(
    rng: np.random.Generator, n_views: int, height: int, width: int, focal: tuple[float, float]
):
    """[n, 3, 3]: a focal length per view (fx = fy), principal point at the image centre."""
    intrinsics = np.zeros((n_views, 3, 3))
    intrinsics[:, 0, 0] = intrinsics[:, 1, 1] = rng.uniform(*focal, n_views) * width
    intrinsics[:, 0, 2], intrinsics[:, 1, 2], intrinsics[:, 2, 2] = width / 2, height / 2, 1.0
    return intrinsics


def _viewpoint(
    rng: np.random.Generator,
    spread: float,
    distance: tuple[float, float],
    elevation: tuple[float, float],
    aim: float,
) -> tuple[np.ndarray, np.ndarray]:
    """A camera centre in front of the scene (azimuth within ±`spread` rad of straight on, `distance` from
    the scene centre, `elevation` above the ground) and the unit direction to the scene's target, jittered
    by `aim`."""
    azimuth = -np.pi / 2 + rng.uniform(-spread, spread)
    xy = _SCENE_CENTER + rng.uniform(*distance) * np.array([np.cos(azimuth), np.sin(azimuth)])
    center = np.array([xy[0], xy[1], rng.uniform(*elevation)])
    look = np.array([0.0, 0.4, 0.4]) + rng.normal(0, aim, 3) - center
    return center, look / np.linalg.norm(look)


def camera_path(
    rng: np.random.Generator, path: str, n_views: int, height: int, width: int, focal: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """Cameras along one kind of path -> ([n, 4, 4] camera-from-world extrinsics, [n, 3, 3] intrinsics).

    "arc": `arc_cameras` (around the scene, looking at it); "forward": a camera walking 0.4-1.4 towards the
    scene, looking ahead with a little sway; "rotate": one centre, the camera turning about it (yaw up to
    ±20°, pitch ±8°): no baseline, the case where depth cannot come from triangulation.
    """
    if path == "arc":
        extrinsics, _ = arc_cameras(rng, n_views, height, width)
    elif path == "forward":
        start, look = _viewpoint(rng, spread=0.6, distance=(4.6, 5.4), elevation=(0.8, 2.0), aim=0.3)
        steps = np.linspace(0, rng.uniform(0.4, 1.4), n_views)
        extrinsics = np.stack(
            [
                look_at_extrinsic(start + s * look, start + (s + 4.0) * look + rng.normal(0, 0.05, 3))
                for s in steps
            ]
        )
    elif path == "rotate":
        center, ahead = _viewpoint(rng, spread=0.7, distance=(3.8, 5.0), elevation=(1.0, 2.2), aim=0.2)
        base_yaw, base_pitch = np.arctan2(ahead[1], ahead[0]), np.arcsin(ahead[2])
        yaws = base_yaw + np.deg2rad(rng.uniform(-20, 20)) * np.linspace(-1, 1, n_views)
        pitches = base_pitch + np.deg2rad(rng.uniform(-8, 8, n_views))
        extrinsics = np.stack(
            [
                look_at_extrinsic(
                    center, center + np.array([np.cos(p) * np.cos(y), np.cos(p) * np.sin(y), np.sin(p)])
                )
                for y, p in zip(yaws, pitches, strict=True)
            ]
        )
    else:
        raise ValueError(f"unknown camera path {path!r}; choose one of {CAMERA_PATHS}")
    return extrinsics, _focal_intrinsics(rng, n_views, height, width, focal)


def synthetic_sample(
    seed: int | Sequence[int], variety: SceneVariety = SceneVariety(), n_views: int | None = None
) -> SyntheticSample:
    """One sample drawn from `variety`, deterministic for `seed` (an int or a sequence, as numpy's seeding).

    `n_views` fixes the view count (training batches need one count per batch); by default it is drawn
    from `variety.views`. Nothing is written to disk.
    """
    rng = np.random.default_rng(seed)
    scene = make_varied_scene(rng, variety)
    path = variety.paths[int(rng.integers(0, len(variety.paths)))]
    views = int(rng.integers(variety.views[0], variety.views[1] + 1)) if n_views is None else n_views
    extrinsics, intrinsics = camera_path(rng, path, views, variety.height, variety.width, variety.focal)
    rendered = [
        _ray_cast(scene, e, k, variety.height, variety.width)
        for e, k in zip(extrinsics, intrinsics, strict=True)
    ]
    images, depth, points = (np.stack(parts) for parts in zip(*rendered, strict=True))

    def f32(array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))

    return SyntheticSample(
        images=f32(images.transpose(0, 3, 1, 2)) / 255.0,
        depth=f32(depth),
        extrinsics=f32(extrinsics[:, :3]),
        intrinsics=f32(intrinsics),
        world_points=f32(points),
        valid=torch.from_numpy(depth > 0),
        scene=scene,
        path=path,
    )
