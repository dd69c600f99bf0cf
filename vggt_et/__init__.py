"""vggt-et: an ExecuTorch-first compiler toolchain for VGGT."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

__version__ = "0.1.0"

if TYPE_CHECKING:
    import torch


def load_model(
    preset: str = "vggt-1b",
    checkpoint: str | None = None,
    *,
    random_weights: bool = False,
    seed: int = 0,
    track_head: bool = False,
    heads: Sequence[str] | None = None,
) -> torch.nn.Module:
    """Build the eager VGGT model of `preset`, with weights from `checkpoint` or from `seed`.

    Lazy import so that `import vggt_et` (and the CLI's --help) stays fast.
    """
    from vggt_et.model.loading import load_model as _load

    return _load(
        preset, checkpoint, random_weights=random_weights, seed=seed, track_head=track_head, heads=heads
    )
