"""VGGT's residual stream for the Hadamard rotation: who writes it, who reads it, where it enters and leaves.

The rotation itself is generic (`vggt_et.quantizers.rotation`); this module knows VGGT's aggregator blocks,
its heads' norms and the two explicit rotations its weights cannot absorb, so fp32 outputs stay the same.
VGGT-Ω has the same stream: its frame and inter-frame blocks are VGGT's pre-norm blocks (RoPE and the QK
norms act after qkv, on q and k only, so they commute with a rotation of the stream), its DINOv3 backbone
ends in a final norm as DINOv2 does, and its dense and camera heads read the [frame ‖ inter-frame] tokens
through a norm as VGGT's do.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from vggt_et.quantizers.rotation import (
    RotationReport,
    RotationSpec,
    StreamRotation,
    delegable_norms,
    fold_residual_rotation,
)
from vggt_et.utils.errors import UserError

ROTATION_SEED = 0


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
    blocks = [*aggregator.frame_blocks, *getattr(aggregator, aggregator.cross_frame_attr)]
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


def rotate_vggt(model: nn.Module, seed: int = ROTATION_SEED) -> RotationReport:
    """Fold a randomized Hadamard into the aggregator's stream in place; fp32 outputs stay the same.

    Adds two explicit rotations the weights cannot absorb: one after DINOv2's final norm (the stream's
    entry) and the camera head's exit before ``token_norm``. Rewritten norms take XNNPACK's form.
    """
    report = fold_residual_rotation(model, vggt_rotation_spec(model), seed=seed)
    delegable_norms(model)
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
