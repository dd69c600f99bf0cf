"""VGGT's side of the Fisher machinery: which blocks, which task outputs, the residual rotation, and files.

Why a module of its own: `vggt_et.quantizers` is model-agnostic. Here live the VGGT facts it needs: the
aggregator's 2*depth blocks in forward order (frame_0, global_0, frame_1, ...), the task outputs FGQ
differentiates (camera = pose_enc, depth, points = world_points), and where VGGT's residual stream is
written and read, so a Hadamard rotation folds away with fp32 outputs unchanged.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vggt_et.compile import OUTPUT_HEADS
from vggt_et.errors import UserError
from vggt_et.export import ProgramShape
from vggt_et.quantizers.fisher import FisherStats, compute_block_fisher, plot_fisher_heatmap
from vggt_et.quantizers.rotation import (
    RotatedLayerNorm,
    RotationReport,
    RotationSpec,
    StreamRotation,
    fold_residual_rotation,
)

TASK_OUTPUTS = {"camera": "pose_enc", "depth": "depth", "points": "world_points"}
TASK_HEADS = {task: OUTPUT_HEADS[task] for task in TASK_OUTPUTS}  # tasks are named like output groups
ALL_TASKS = tuple(TASK_OUTPUTS)
ROTATION_SEED = 0


def parse_tasks(text: str | Sequence[str]) -> tuple[str, ...]:
    """'depth,camera' → ('camera', 'depth'): known names, no duplicates, canonical order."""
    names = [t.strip() for t in (text.split(",") if isinstance(text, str) else text) if t.strip()]
    unknown = [t for t in names if t not in TASK_OUTPUTS]
    if unknown or not names:
        raise UserError(
            f"unknown task(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(ALL_TASKS)}"
        )
    return tuple(t for t in ALL_TASKS if t in names)


def aggregator_blocks(model: nn.Module) -> list[tuple[str, str]]:
    """(label, module path) of every aggregator block in forward order: frame_0, global_0, frame_1, ..."""
    depth = len(model.aggregator.frame_blocks)
    pairs = []
    for i in range(depth):
        pairs.append((f"frame_{i}", f"aggregator.frame_blocks.{i}"))
        pairs.append((f"global_{i}", f"aggregator.global_blocks.{i}"))
    return pairs


def _heads(model: nn.Module) -> list[tuple[str, nn.Module]]:
    found = [(n, getattr(model, f"{n}_head", None)) for n in ("camera", "depth", "point", "track")]
    return [(n, h) for n, h in found if h is not None]


def vggt_rotation_spec(model: nn.Module) -> RotationSpec:
    """Every writer and reader of the aggregator's residual stream, as the rotation needs them.

    The mean must survive (the heads' norms span the [frame ‖ global] concatenation, the camera head reuses
    its normed tokens as a new stream): ``fold_centring=False``. The entry (after DINOv2's affine final norm)
    and the camera head's exit are explicit matrices, added by :func:`rotate_vggt`.
    """
    aggregator = model.aggregator
    blocks = [*aggregator.frame_blocks, *aggregator.global_blocks]
    dim = aggregator.camera_token.shape[-1]
    writers: list[Any] = []
    norm_readers: list[Any] = []
    pairs: list[Any] = []
    for block in blocks:
        for linear, scale in ((block.attn.proj, block.ls1), (block.mlp.fc2, block.ls2)):
            gamma = getattr(scale, "gamma", None)
            writers.append((linear, gamma) if gamma is not None else linear)
        norm_readers += [(block.norm1, [block.attn.qkv]), (block.norm2, [block.mlp.fc1])]
        pairs.append((block.attn.qkv, block.attn.proj, block.attn.head_dim, 2 * dim))
    for name, head in _heads(model):
        if name == "track":
            raise UserError("the rotation does not cover the track head; load the model without it")
        if name in ("depth", "point"):
            norm_readers.append((head.norm, list(head.projects)))
    return RotationSpec(
        dim=dim,
        stream_parameters=[aggregator.camera_token, aggregator.register_token],
        writers=writers,
        norm_readers=norm_readers,
        value_output_pairs=pairs,
        fold_centring=False,
    )


class DelegableRotatedLayerNorm(nn.Module):
    """``RotatedLayerNorm``'s arithmetic on a [A, N, width, 1] view, means over dims (2, 3) with keepdim.

    Why: exported as is, its rms_norm and sum do not reach XNNPACK (they split every block into separate
    delegates); this is the form `passes.decompose_layer_norm` gives LayerNorm, which XNNPACK takes whole.
    The mean-slot sum is a masked mean times ``width / copies``.
    """

    def __init__(self, source: RotatedLayerNorm) -> None:
        super().__init__()
        self.width, self.copies, self.eps = source.width, source.copies, float(source.eps)
        self.register_buffer("mean_slots", source.mean_slots.detach().clone().reshape(1, 1, -1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x4 = x.reshape(-1, x.shape[-2] if x.dim() > 1 else 1, self.width, 1)
        slot_mean = (x4 * self.mean_slots).mean(dim=(2, 3), keepdim=True) * (self.width / self.copies)
        centred = x4 - slot_mean * self.mean_slots
        variance = (centred * centred).mean(dim=(2, 3), keepdim=True)
        return (centred * torch.rsqrt(variance + self.eps)).reshape(x.shape)


def _delegable_norms(model: nn.Module) -> None:
    for name, module in list(model.named_modules()):
        if isinstance(module, RotatedLayerNorm):
            parent, _, child = name.rpartition(".")
            setattr(
                model.get_submodule(parent) if parent else model, child, DelegableRotatedLayerNorm(module)
            )


def rotate_vggt(model: nn.Module, seed: int = ROTATION_SEED) -> RotationReport:
    """Fold a randomized Hadamard into the aggregator's stream in place; fp32 outputs stay the same.

    Adds two explicit rotations the weights cannot absorb: one after DINOv2's final norm (the stream's
    entry) and the camera head's exit before ``token_norm``. Rewritten norms take XNNPACK's form.
    """
    report = fold_residual_rotation(model, vggt_rotation_spec(model), seed=seed)
    _delegable_norms(model)
    dino = model.aggregator.patch_embed
    dino.norm = nn.Sequential(dino.norm, StreamRotation(report.stream_matrix))
    if getattr(model, "camera_head", None) is not None:
        head = model.camera_head
        head.token_norm = nn.Sequential(report.exit_rotation(2), head.token_norm)
    return report


def rotation_summary(report: RotationReport) -> dict[str, Any]:
    """JSON-ready: what was rewritten, and the mean outlier ratio (max/rms per row) before and after."""

    def mean(values: dict[str, float]) -> float | None:
        return round(sum(values.values()) / len(values), 4) if values else None

    return {
        "seed": ROTATION_SEED,
        "norms_rewritten": len(report.norms_rewritten),
        "linears_rotated": len(report.rotated_inputs) + len(report.rotated_outputs),
        "outlier_ratio_before": mean(report.outlier_ratio_before),
        "outlier_ratio_after": mean(report.outlier_ratio_after),
    }


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
    missing = [t for t in tasks if getattr(model, f"{TASK_HEADS[t]}_head", None) is None]
    if missing:
        raise UserError(f"the model has no head for task(s) {', '.join(missing)}")
    blocks = aggregator_blocks(model)
    losses = {t: (lambda out, key=TASK_OUTPUTS[t]: out[key]) for t in tasks}
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


def fisher_command(
    *,
    preset: str,
    checkpoint: str | None,
    random_weights: bool,
    seed: int,
    frames: int,
    height: int,
    width: int,
    tasks: str,
    calib_data: str | None,
    calib_samples: int,
    no_rotation: bool,
    output: str,
    keep_activations: bool = False,
) -> tuple[FisherStats, str]:
    """`vggt-et fisher`: statistics file, heat map PNG beside it; returns the stats and a summary table."""
    from vggt_et import checks
    from vggt_et.io_utils import format_table
    from vggt_et.model.loading import check_model_source, load_model
    from vggt_et.model.presets import get_preset
    from vggt_et.quantize import calibration_samples, check_calibration_data

    config = get_preset(preset)
    shape = ProgramShape(frames, height, width, config.patch_size)
    chosen = parse_tasks(tasks)
    check_model_source(preset, checkpoint, random_weights, [TASK_HEADS[t] for t in chosen])
    if not math.log2(config.embed_dim).is_integer() and not no_rotation:
        raise UserError(
            f"the rotation needs a power-of-two width, {preset} has {config.embed_dim}; pass --no-rotation"
        )
    checks.output_file(output, "-o")
    checks.output_file(heatmap_path(output), "the heat map (beside -o)")
    checks.distinct_paths(
        {"-o": output, "the heat map (beside -o)": heatmap_path(output)}, {"--checkpoint": checkpoint}
    )
    check_calibration_data(calib_data, calib_samples)
    samples = calibration_samples(calib_data, shape, calib_samples, seed=seed)
    model = load_model(
        preset, checkpoint, random_weights=random_weights, seed=seed, heads=[TASK_HEADS[t] for t in chosen]
    ).eval()
    if not no_rotation:
        print("fisher: folding the residual rotation", file=sys.stderr, flush=True)
        rotate_vggt(model)
    metadata = fisher_metadata(
        preset,
        shape,
        len(samples),
        chosen,
        rotated=not no_rotation,
        weights=weights_description(checkpoint, random_weights, seed),
        calib_data=calib_data,
    )
    stats = compute_vggt_fisher(model, samples, chosen, metadata, recompute_blocks=not keep_activations)
    stats.save(output)
    png = heatmap_path(output)
    plot_fisher_heatmap(stats, png)
    table = format_table(["block", "importance", *chosen], sensitivity_rows(stats))
    shape_text = f"{shape.frames}x{shape.height}x{shape.width}"
    summary = (
        f"Fisher [{len(chosen)} tasks, {len(stats.block_names)} blocks, {stats.raw.shape[2]} channels] of "
        f"{preset} at {shape_text} over {len(samples)} samples\nmost sensitive blocks (importance: mean 1; "
        f"tasks: mean per-task-normalised Fisher)\n{table}\nwrote {output} and {png}"
    )
    return stats, summary
