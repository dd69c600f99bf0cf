"""Quantization recipes, calibration and weight transforms for exported transformers (generic: no VGGT here).

Owns: the PT2E and torchao recipes (recipes.py is the registry), calibration observers, keep-float layer
patterns, and the Fisher-guided W4 tools (Fisher statistics, Hadamard rotation, clipping, 4/8-bit planning,
block-by-block quantization in blockwise.py) that act on any model's blocks given as module paths.
Imports: torch, torchao, ExecuTorch and `vggt_et.utils` only; never the model or the pipeline. VGGT's use
of these tools lives in `vggt_et.fgq`.
"""
