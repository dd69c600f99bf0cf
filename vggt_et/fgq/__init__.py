"""FGQ-style Fisher-guided W4 applied to VGGT: which blocks and task outputs the Fisher covers (tasks.py),
VGGT's residual stream for the Hadamard rotation (rotation.py), and the `--quant w4-fisher` stage that
rotates, plans 4/8 bits and clips the aggregator (w4_fisher.py).

The algorithms are generic and live in `vggt_et.quantizers`; this room holds only VGGT's side. Imports: the
model, data, options, quantizers and utils; never the pipeline that calls it.
"""
