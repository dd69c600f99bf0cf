"""Training VGGT on synthetic scenes: the official training losses (camera loss on the pose encoding,
confidence-weighted depth and point losses with their gradient terms, the ground-truth scene normalised as
the official trainer does), AdamW with linear warm-up and cosine decay, the loss curve and safetensors
checkpoints. Scenes come from `vggt_et.data.synthetic`, generated on the fly; nothing here compiles.

Imports: data (synthetic samples), outputs (the pose encoding of ground-truth cameras) and utils; the model
comes in as an argument (`commands/train.py` builds it), so never the model room, nor the pipeline, the passes,
the quantizers, the runtime or `commands`.
"""
