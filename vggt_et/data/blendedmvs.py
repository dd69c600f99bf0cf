"""BlendedMVS reader: scenes, view groups, and groups loaded at a compiled program's input shape.

Layout (as the dataset ships; `write_synthetic_dataset` writes the same):
    <root>/<scene>/blended_images/NNNNNNNN.jpg        (NNNNNNNN_masked.jpg are ignored)
    <root>/<scene>/cams/NNNNNNNN_cam.txt, cams/pair.txt
    <root>/<scene>/rendered_depth_maps/NNNNNNNN.pfm    (0 where there is no depth)
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from vggt_et.data.cams import CamFile, read_cam_txt, read_pair_txt
from vggt_et.data.pfm import read_pfm
from vggt_et.data.preprocess import PixelTransform, open_rgb, preprocess_image_to_shape
from vggt_et.utils.errors import UserError

logger = logging.getLogger(__name__)

# Scenes used for calibration when the dataset root holds them (a spread of object/indoor/outdoor).
DEFAULT_CALIBRATION_SCENES = (
    "5a48c4e9c7dab83a7d7b5cc7",
    "5a3ca9cb270f0e3f14d0eddb",
    "5a3cb4e4270f0e3f14d12f43",
    "5a3f4aba5889373fbbc5d3b5",
    "5a4a38dad38c8a075495b5d2",
    "5a7d3db14989e929563eb153",
    "5a8aa0fab18050187cbe060e",
    "5a48d4b2c7dab83a7d7b9851",
)
STRATEGIES = ("consecutive", "pairs")
_VIEW_IMAGE = re.compile(r"^(\d+)\.(jpg|jpeg|png)$", re.IGNORECASE)


@dataclass(frozen=True, eq=False)
class BlendedMVSScene:
    """One scene folder; `image_files` maps view id -> file name in blended_images/."""

    root: Path
    name: str
    image_files: dict[int, str] = field(repr=False)

    @property
    def path(self) -> Path:
        return self.root / self.name

    @property
    def view_ids(self) -> list[int]:
        return sorted(self.image_files)

    def image_path(self, view: int) -> Path:
        return self.path / "blended_images" / self.image_files[view]

    def cam_path(self, view: int) -> Path:
        return self.path / "cams" / f"{view:08d}_cam.txt"

    def depth_path(self, view: int) -> Path:
        return self.path / "rendered_depth_maps" / f"{view:08d}.pfm"

    @property
    def pair_path(self) -> Path:
        return self.path / "cams" / "pair.txt"

    def cam(self, view: int) -> CamFile:
        return read_cam_txt(self.cam_path(view))

    @cached_property
    def pairs(self) -> dict[int, list[tuple[int, float]]]:
        """pair.txt of the scene: view -> [(neighbour, score), ...], best first."""
        return read_pair_txt(self.pair_path)


def _check_root(root: str | os.PathLike) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root}: dataset root not found; pass the folder that holds the BlendedMVS scenes")
    return root


def _is_scene_dir(path: Path) -> bool:
    return (path / "blended_images").is_dir()


def open_scene(root: str | os.PathLike, name: str) -> BlendedMVSScene:
    """Open `<root>/<name>`; errors name the missing folder or the empty scene."""
    root = _check_root(root)
    path = root / name
    if not _is_scene_dir(path):
        raise UserError(f"{path}: scene not found (no blended_images/ folder); check the scene name and root")
    image_files = {}
    for entry in (path / "blended_images").iterdir():
        match = _VIEW_IMAGE.match(entry.name)
        if match:  # NNNNNNNN_masked.jpg does not match: masked copies are not views
            image_files[int(match.group(1))] = entry.name
    if not image_files:
        raise UserError(f"{path / 'blended_images'}: empty scene (no NNNNNNNN.jpg views); re-extract it")
    if not (path / "cams").is_dir():
        raise UserError(f"{path / 'cams'}: camera folder missing; re-extract the scene")
    return BlendedMVSScene(root, name, image_files)


def list_scenes(root: str | os.PathLike, names: list[str] | None = None) -> list[BlendedMVSScene]:
    """All scenes under `root` (sorted by name), or the named ones (each must exist)."""
    root = _check_root(root)
    if names is None:
        names = sorted(p.name for p in root.iterdir() if p.is_dir() and _is_scene_dir(p))
        if not names:
            raise UserError(
                f"{root}: no BlendedMVS scenes found (expected <root>/<scene>/blended_images/*.jpg)"
            )
    return [open_scene(root, name) for name in names]


SYNTHETIC_SCENE_PREFIX = "synthetic_"  # vggt_et.data.synthetic names its scenes so


def calibration_scenes(root: str | os.PathLike) -> list[BlendedMVSScene]:
    """The default calibration scenes present under `root`; all scenes if none is, with a warning unless
    they are all our synthetic ones (which never hold the defaults, and say so where they are made)."""
    root = _check_root(root)
    present = [name for name in DEFAULT_CALIBRATION_SCENES if _is_scene_dir(root / name)]
    if present:
        return list_scenes(root, present)
    scenes = list_scenes(root)
    if all(scene.name.startswith(SYNTHETIC_SCENE_PREFIX) for scene in scenes):
        return scenes
    logger.warning(
        "%s holds none of the %d default calibration scenes; using all %d scenes found",
        root,
        len(DEFAULT_CALIBRATION_SCENES),
        len(scenes),
    )
    return scenes


def _pair_group(scene: BlendedMVSScene, reference: int, frames: int) -> list[int]:
    """The reference view, then its pair.txt neighbours best first, then the nearest ids as filler."""
    known = set(scene.image_files)
    group = [reference]
    for neighbour, _score in scene.pairs.get(reference, []):
        if neighbour in known and neighbour not in group:
            group.append(neighbour)
    if len(group) < frames:
        by_distance = sorted(scene.view_ids, key=lambda v: (abs(v - reference), v))
        group += [v for v in by_distance if v not in group]
    return group[:frames]


def sample_view_groups(
    scene: BlendedMVSScene, frames: int, strategy: str = "consecutive", n_groups: int = 1, seed: int = 0
) -> list[list[int]]:
    """`n_groups` groups of `frames` view ids, deterministic for `seed`.

    consecutive: runs of neighbouring ids (BlendedMVS ids roughly follow the capture order).
    pairs: a reference view followed by its best pair.txt neighbours (the reference comes first:
    VGGT takes the first frame as the world frame). Distinct groups are used while they last.
    """
    if strategy not in STRATEGIES:
        raise UserError(f"unknown view sampling strategy {strategy!r}; use 'consecutive' or 'pairs'")
    views = scene.view_ids
    if frames < 1 or frames > len(views):
        raise UserError(f"{scene.path}: scene has {len(views)} views, cannot make groups of {frames} frames")
    rng = np.random.default_rng(seed)
    if strategy == "consecutive":
        n_starts = len(views) - frames + 1
        starts = rng.choice(n_starts, size=n_groups, replace=n_groups > n_starts)
        return [views[start : start + frames] for start in starts]
    refs = rng.choice(len(views), size=n_groups, replace=n_groups > len(views))
    return [_pair_group(scene, views[i], frames) for i in refs]


@dataclass
class ViewGroup:
    """Views of one scene at a compiled shape: everything needed to run and to score a program.

    images [S, 3, H, W] in [0, 1]; depths [S, H, W] (0 = no depth) or None; extrinsics [S, 3, 4]
    camera-from-world; intrinsics [S, 3, 3] already carried through the resize/crop (`transforms`).
    """

    scene: str
    view_ids: list[int]
    images: torch.Tensor
    depths: torch.Tensor | None
    extrinsics: torch.Tensor
    intrinsics: torch.Tensor
    transforms: list[PixelTransform]


def load_group(
    scene: BlendedMVSScene,
    view_ids: list[int],
    height: int,
    width: int,
    mode: str = "crop",
    with_depth: bool = True,
) -> ViewGroup:
    """Load views at (height, width): images preprocessed, depths resampled with the same transform
    (nearest, so depth values stay exact), intrinsics following the transform."""
    images, depths, extrinsics, intrinsics, transforms = [], [], [], [], []
    for view in view_ids:
        if view not in scene.image_files:
            raise UserError(f"{scene.path}: view {view} not in the scene ({len(scene.image_files)} views)")
        image, transform = preprocess_image_to_shape(open_rgb(scene.image_path(view)), height, width, mode)
        cam = scene.cam(view)
        images.append(image)
        transforms.append(transform)
        extrinsics.append(cam.extrinsic[:3, :4])
        intrinsics.append(transform.apply_to_intrinsics(cam.intrinsic))
        if with_depth:
            depth = read_pfm(scene.depth_path(view))
            if depth.ndim != 2:
                raise UserError(f"{scene.depth_path(view)}: depth map must be a grayscale 'Pf' PFM")
            depths.append(transform.for_input_size(*depth.shape).warp_nearest(depth, fill=0.0))
    return ViewGroup(
        scene=scene.name,
        view_ids=list(view_ids),
        images=torch.stack(images),
        depths=torch.from_numpy(np.stack(depths).astype(np.float32)) if with_depth else None,
        extrinsics=torch.from_numpy(np.stack(extrinsics).astype(np.float32)),
        intrinsics=torch.from_numpy(np.stack(intrinsics).astype(np.float32)),
        transforms=transforms,
    )
