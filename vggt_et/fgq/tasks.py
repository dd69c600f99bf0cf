"""VGGT's side of the Fisher machinery: which blocks, which task outputs, and the statistics files.

Why a module of its own: `vggt_et.quantizers` is model-agnostic. Here live the VGGT facts it needs: the
aggregator's 2*depth blocks in forward order (frame_0, global_0, frame_1, ... for VGGT; frame_0,
inter_frame_0, ... for VGGT-Ω, whose register-attention layers run the same block on fewer tokens) and the
task outputs FGQ differentiates (the prediction of each output group: camera = pose_enc, depth,
points = world_points; VGGT-Ω has no points).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vggt_et.fgq.rotation import ROTATION_SEED
from vggt_et.options import OUTPUT_GROUPS, ProgramShape, parse_outputs
from vggt_et.quantizers.fisher import FisherStats, compute_block_fisher
from vggt_et.utils.errors import UserError

# Task order of the statistics files (rows of FisherStats.raw); tasks are named like output groups.
ALL_TASKS = ("camera", "depth", "points")


def task_heads(tasks: Sequence[str]) -> list[str]:
    """The model heads these tasks need."""
    return [OUTPUT_GROUPS[t].head for t in tasks]


def parse_tasks(text: str | Sequence[str]) -> tuple[str, ...]:
    """'depth,camera' → ('camera', 'depth'): known names (output groups), no duplicates, file order."""
    names = parse_outputs(text, what="task(s)")
    return tuple(t for t in ALL_TASKS if t in names)


def default_tasks(heads: Sequence[str]) -> tuple[str, ...]:
    """Every task whose head the model family has (VGGT: camera, depth, points; VGGT-Ω: camera, depth)."""
    return tuple(t for t in ALL_TASKS if OUTPUT_GROUPS[t].head in heads)


def aggregator_blocks(model: nn.Module) -> list[tuple[str, str]]:
    """(label, module path) of every aggregator block in forward order: frame_0, global_0, frame_1, ...
    (VGGT-Ω: frame_0, inter_frame_0, ...)."""
    depth = len(model.aggregator.frame_blocks)
    cross = model.aggregator.cross_frame_attr
    label = cross.removesuffix("_blocks")
    pairs = []
    for i in range(depth):
        pairs.append((f"frame_{i}", f"aggregator.frame_blocks.{i}"))
        pairs.append((f"{label}_{i}", f"aggregator.{cross}.{i}"))
    return pairs


def compute_vggt_fisher(
    model: nn.Module,
    samples: Sequence[tuple],
    tasks: Sequence[str],
    metadata: dict[str, Any],
    *,
    progress: bool = True,
    recompute_blocks: bool = True,
) -> FisherStats:
    """FGQ's diagonal Fisher [T, 2*depth, C] of the aggregator blocks for the model's task outputs.

    `recompute_blocks` (default) recomputes each block in the backward instead of keeping its
    activations: on VGGT-1B at 2x518x518 the pass peaks at 11.6 GiB instead of 20.9 GiB, 15 % slower
    (benchmarks/fisher_memory.py).
    """
    missing = [t for t in tasks if getattr(model, f"{OUTPUT_GROUPS[t].head}_head", None) is None]
    if missing:
        raise UserError(f"the model has no head for task(s) {', '.join(missing)}")
    blocks = aggregator_blocks(model)
    losses = {t: (lambda out, key=OUTPUT_GROUPS[t].prediction: out[key]) for t in tasks}
    stats = compute_block_fisher(
        model,
        [path for _, path in blocks],
        losses,
        samples,
        progress=progress,
        metadata=metadata,
        recompute_blocks=recompute_blocks,
    )
    stats.block_names = [label for label, _ in blocks]
    return stats


def fisher_metadata(
    preset: str,
    shape: ProgramShape,
    samples: int,
    tasks: Sequence[str],
    *,
    rotated: bool,
    weights: str,
    calib_data: str | None,
) -> dict[str, Any]:
    """What a Fisher file was computed for: compile checks it against its own settings."""
    return {
        "preset": preset,
        "frames": shape.frames,
        "height": shape.height,
        "width": shape.width,
        "samples": samples,
        "tasks": list(tasks),
        "rotation": {"applied": rotated, "seed": ROTATION_SEED if rotated else None},
        "weights": weights,
        "calib_data": calib_data or "synthetic scenes",
    }


def weights_description(checkpoint: str | None, random_weights: bool, seed: int) -> str:
    return f"random seed {seed}" if random_weights else f"checkpoint {Path(checkpoint or '').name}"


def load_matching_fisher(
    path: str, preset: str, shape: ProgramShape, tasks: Sequence[str], *, rotated: bool
) -> FisherStats:
    """Load a Fisher file and keep the rows of ``tasks``; a one-line UserError when it was made for
    another preset, shape, rotation or task set (its channels would weight the wrong things)."""
    if not Path(path).is_file():
        raise UserError(f"Fisher file {path} not found; write one with `vggt-et fisher`")
    try:
        stats = FisherStats.load(path)
    except Exception as exc:  # torch.load raises many kinds on foreign files
        raise UserError(f"{path} is not a Fisher file from `vggt-et fisher` ({type(exc).__name__})") from None
    meta = stats.metadata
    wanted = {"preset": preset, "frames": shape.frames, "height": shape.height, "width": shape.width}
    for key, value in wanted.items():
        if meta.get(key) != value:
            raise UserError(
                f"Fisher file {path} was computed for {key} {meta.get(key)!r}, not {value!r}; "
                "run `vggt-et fisher` with the compile's preset and shape"
            )
    was_rotated = bool(meta.get("rotation", {}).get("applied"))
    if was_rotated != rotated:
        flag = "without --no-rotation" if rotated else "with --no-rotation"
        raise UserError(
            f"Fisher file {path} was computed {'with' if was_rotated else 'without'} the "
            f"rotation; run `vggt-et fisher` {flag} to match the compile"
        )
    absent = [t for t in tasks if t not in stats.task_names]
    if absent:
        raise UserError(
            f"Fisher file {path} has no statistics for task(s) {', '.join(absent)}; "
            f"it has {', '.join(stats.task_names)}"
        )
    rows = [stats.task_names.index(t) for t in tasks]
    return FisherStats(
        raw=stats.raw[rows],
        task_names=list(tasks),
        block_names=stats.block_names,
        num_samples=stats.num_samples,
        metadata=meta,
    )


def sensitivity_rows(stats: FisherStats, top: int = 10) -> list[tuple]:
    """(block, importance, per-task mean normalised Fisher...) for the ``top`` most sensitive blocks."""
    importance = stats.block_importance()
    per_task = stats.per_task_normalised().mean(dim=2)  # [T, L]
    order = torch.argsort(importance, descending=True)[:top]
    return [
        (
            stats.block_names[i],
            float(importance[i]),
            *(float(per_task[t, i]) for t in range(len(stats.task_names))),
        )
        for i in order.tolist()
    ]


def heatmap_path(output: str) -> str:
    return str(Path(output).with_suffix(".png"))
