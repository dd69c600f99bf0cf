"""Our own checkpoint-compatible VGGT and VGGT-Ω (official tensor names, eager semantics), timm-style:
shared blocks in layers.py / rope.py / activations.py, one architecture per file, presets as data, loading
(safetensors, official .pt) in loading.py, built-in checkpoints (`--checkpoint builtin:NAME`, files shipped in
checkpoints/) in builtin.py.

Imports: torch and `vggt_et.utils` only; the model knows nothing of export, passes or quantization.
"""

from vggt_et.model.presets import PRESETS, VGGTConfig, get_preset
from vggt_et.model.vggt import VGGT

__all__ = ["PRESETS", "VGGT", "VGGTConfig", "get_preset"]
