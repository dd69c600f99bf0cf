"""View groups for calibration and comparison: from a BlendedMVS root, or synthetic when none is given."""

from __future__ import annotations

import logging
import os
import tempfile

from vggt_et.data.blendedmvs import ViewGroup, calibration_scenes, load_group, sample_view_groups
from vggt_et.data.synthetic import write_synthetic_dataset
from vggt_et.options import ProgramShape
from vggt_et.utils.cleanup import temporary
from vggt_et.utils.errors import UserError

logger = logging.getLogger(__name__)


def calibration_groups(
    root: str | os.PathLike | None,
    frames: int,
    height: int,
    width: int,
    n_groups: int = 8,
    *,
    strategy: str = "consecutive",
    mode: str = "crop",
    seed: int = 0,
    with_depth: bool = False,
    announce: bool = True,
) -> list[ViewGroup]:
    """`n_groups` groups of `frames` views at (height, width), spread round-robin over the scenes.

    With `root` None, synthetic scenes are rendered at (height, width) into a temporary folder
    (removed again; the groups live in memory) and a warning says so (unless `announce` is off: callers
    that say it in their own words, e.g. `vggt-et run` without --images).
    """
    if root is None:
        with temporary(tempfile.mkdtemp(prefix="vggt-et-synthetic-")) as tmp:
            n_scenes = min(max(n_groups, 1), 4)
            write_synthetic_dataset(tmp, n_scenes, max(8, frames), height, width, seed=seed)
            if announce:
                logger.warning(
                    "no calibration data given: using %d synthetic scenes (%dx%d)", n_scenes, height, width
                )
            return _groups_from_root(tmp, frames, height, width, n_groups, strategy, mode, seed, with_depth)
    return _groups_from_root(root, frames, height, width, n_groups, strategy, mode, seed, with_depth)


def _groups_from_root(
    root, frames, height, width, n_groups, strategy, mode, seed, with_depth
) -> list[ViewGroup]:
    scenes = calibration_scenes(root)
    counts = [n_groups // len(scenes) + (i < n_groups % len(scenes)) for i in range(len(scenes))]
    groups = []
    for index, (scene, count) in enumerate(zip(scenes, counts, strict=True)):
        if count == 0:
            continue
        for view_ids in sample_view_groups(scene, frames, strategy, count, seed=seed + index):
            groups.append(load_group(scene, view_ids, height, width, mode=mode, with_depth=with_depth))
    return groups


def check_calibration_data(calib_data: str | None, count: int) -> None:
    """--calib-data (a folder with BlendedMVS-layout scenes) and --calib-samples, before any work."""
    from vggt_et.utils import checks

    if calib_data is not None:
        from vggt_et.data.blendedmvs import calibration_scenes

        checks.input_folder(calib_data, "--calib-data", "BlendedMVS-layout folder")
        calibration_scenes(calib_data)  # refuses a folder that holds no scene
    checks.positive_int(count, "--calib-samples")


def calibration_samples(
    calib_data: str | None, shape: ProgramShape, count: int, *, seed: int = 0, batch_dim: bool = True
) -> list[tuple]:
    """`count` S-view groups from a BlendedMVS-layout folder (synthetic scenes when None), as model inputs
    ([1, S, 3, H, W], or [S, 3, H, W] for rank-4 QNN programs)."""
    if count < 1:
        raise UserError(f"--calib-samples must be at least 1, got {count}")
    groups = calibration_groups(
        calib_data, shape.frames, shape.height, shape.width, n_groups=count, seed=seed
    )
    return [(group.images.unsqueeze(0).float() if batch_dim else group.images.float(),) for group in groups]
