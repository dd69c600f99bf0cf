"""Parameter counts per part of a preset, computed on the meta device (no memory, no weights)."""

from __future__ import annotations

from collections import Counter

from vggt_et.model.loading import build_model
from vggt_et.model.presets import get_preset

# Parts reported by `vggt-et info`, as state-dict prefixes.
PARTS = (
    "aggregator.patch_embed.",
    "aggregator.frame_blocks.",
    "aggregator.global_blocks.",
    "aggregator.inter_frame_blocks.",  # VGGT-Ω
    "aggregator.",  # camera and register tokens (the rest of the aggregator)
    "camera_head.",
    "depth_head.",
    "dense_head.",  # VGGT-Ω
    "point_head.",
    "track_head.",
)


def parameter_counts(preset: str) -> dict:
    """{"preset", "total_params", "tensors", "buffers", "parts": {part: params}, "config"} for the full
    preset. Parameters only (learnable); `tensors` counts every state-dict entry, buffers included (VGGT-Ω's
    RoPE periods and qkv bias masks)."""
    model = build_model(preset, device="meta")
    parts: Counter[str] = Counter()
    total = 0
    for name, tensor in model.named_parameters():
        part = next(p for p in PARTS if name.startswith(p))
        parts[part.rstrip(".")] += tensor.numel()
        total += tensor.numel()
    parts["aggregator (tokens)"] = parts.pop("aggregator", 0)
    tensors = len(model.state_dict())
    return {
        "preset": preset,
        "total_params": total,
        "tensors": tensors,
        "buffers": tensors - sum(1 for _ in model.parameters()),
        "fp32_bytes": total * 4,
        "parts": dict(parts),
        "config": get_preset(preset).to_dict(),
    }
