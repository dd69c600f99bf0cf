"""Quantization recipes, calibration and weight transforms for exported transformers (generic: no VGGT here)."""
