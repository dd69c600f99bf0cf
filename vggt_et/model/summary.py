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
    "aggregator.",  # camera and register tokens (the rest of the aggregator)
    "camera_head.",
    "depth_head.",
    "point_head.",
    "track_head.",
)


def parameter_counts(preset: str) -> dict:
    """{"preset", "total_params", "tensors", "parts": {part: params}, "config"} for the full preset."""
    model = build_model(preset, device="meta")
    parts: Counter[str] = Counter()
    total = tensors = 0
    for name, tensor in model.state_dict().items():
        part = next(p for p in PARTS if name.startswith(p))
        parts[part.rstrip(".")] += tensor.numel()
        total += tensor.numel()
        tensors += 1
    parts["aggregator (tokens)"] = parts.pop("aggregator", 0)
    return {
        "preset": preset,
        "total_params": total,
        "tensors": tensors,
        "fp32_bytes": total * 4,
        "parts": dict(parts),
        "config": get_preset(preset).to_dict(),
    }
