"""Our own checkpoint-compatible implementation of VGGT (official tensor names, eager semantics)."""

from vggt_et.model.presets import PRESETS, VGGTConfig, get_preset
from vggt_et.model.vggt import VGGT

__all__ = ["PRESETS", "VGGT", "VGGTConfig", "get_preset"]
