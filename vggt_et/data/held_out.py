"""Held-out synthetic scenes: seeds that `vggt-et train` never draws, for figures on a trained model.

Scene i is `synthetic_sample([HELD_OUT_SEED + i], SceneVariety(height, width), n_views=S)`: the generator
training draws from, so the scenes are in distribution, but not the seeds. Training draws sample b of step t
from [seed, t, b] with seed 0 unless told otherwise, and numpy pads a seed sequence with zeros, so
[HELD_OUT_SEED + i] is [HELD_OUT_SEED + i, 0, 0]: only a run with --seed >= HELD_OUT_SEED could have seen one.
The scene and its camera path are the same at every S (the cameras spread over the path).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

HELD_OUT_SEED = 10**6


@dataclass(frozen=True)
class HeldOutScene:
    seed: int
    images: np.ndarray  # [1, S, 3, H, W] float32 in [0, 1]
    truth: dict[str, np.ndarray]  # depth [S, H, W], extrinsics [S, 3, 4], intrinsics [S, 3, 3]
    path: str  # camera path kind


def held_out_scenes(count: int, frames: int, height: int, width: int) -> list[HeldOutScene]:
    from vggt_et.data.synthetic import SceneVariety, synthetic_sample

    variety = SceneVariety(height=height, width=width)
    scenes = []
    for index in range(count):
        seed = HELD_OUT_SEED + index
        sample = synthetic_sample([seed], variety, n_views=frames)
        truth = {
            "depth": sample.depth.numpy(),
            "extrinsics": sample.extrinsics.numpy(),
            "intrinsics": sample.intrinsics.numpy(),
        }
        scenes.append(HeldOutScene(seed, sample.images.unsqueeze(0).numpy(), truth, sample.path))
    return scenes
