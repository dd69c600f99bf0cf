"""Fixed-shape wrapper around the eager model and its `torch.export`.

The wrapper picks which heads run (so unused heads and aggregator layers vanish from the graph) and
returns a flat tuple of tensors in a fixed order, which is what a .pte program can return.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from vggt_et.model.dpt_head import DPTTrunk
from vggt_et.options import OUTPUT_GROUPS, ProgramShape, parse_outputs
from vggt_et.utils.errors import UserError

DEFAULT_OUTPUTS = ("depth",)


class VGGTProgram(nn.Module):
    """images [1, S, 3, H, W] in [0, 1] → the chosen output tensors, running only the heads they need."""

    def __init__(
        self,
        model: nn.Module,
        outputs: Sequence[str] = DEFAULT_OUTPUTS,
        dtype: torch.dtype | None = None,
        batch_dim: bool = True,
    ) -> None:
        """`dtype`: the model's compute dtype (e.g. float16); inputs and outputs stay float32.
        `batch_dim=False`: rank-4 interface ([S, 3, H, W] in, no leading 1 on outputs), so no tensor of the
        program exceeds rank 4, which QNN's HTP wants."""
        super().__init__()
        self.model = model
        self.dtype = dtype
        self.batch_dim = batch_dim
        self.outputs = parse_outputs(outputs)
        missing = [n for n in self.outputs if getattr(model, f"{OUTPUT_GROUPS[n].head}_head", None) is None]
        if missing:
            raise UserError(f"this model has no head for output {', '.join(missing)}")

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        model = self.model
        if not self.batch_dim:
            images = images.unsqueeze(0)
        if self.dtype is not None:
            images = images.to(self.dtype)
        tokens, patch_start_idx = model.aggregator(images)
        results: list[torch.Tensor] = []
        for name in self.outputs:
            results.extend(model.predict(name, tokens, images, patch_start_idx))
        if self.dtype is not None:
            results = [r.float() for r in results]
        if not self.batch_dim:
            results = [r.squeeze(0) for r in results]
        return tuple(results)


OFFICIAL_HEAD_FRAMES = 8  # the official DPT head's frames_chunk_size


def bound_head_frames(model: nn.Module, shape: ProgramShape, budget: int | None, itemsize: int = 4) -> int:
    """Sets the DPT heads' frame group to the most frames whose full-resolution map fits `budget` bytes (at
    least 1; the official 8 when there is no budget) and returns it. Results do not depend on the group."""
    candidates = (getattr(model, "depth_head", None), getattr(model, "point_head", None))
    heads = [h for h in candidates if isinstance(h, DPTTrunk)]  # VGGT's DPT heads, VGGT-Ω's dense head
    group = OFFICIAL_HEAD_FRAMES
    if budget is not None and heads:
        per_frame = max(h.full_resolution_bytes(shape.height, shape.width, itemsize) for h in heads)
        group = max(1, budget // per_frame)
    for head in heads:
        head.frames_chunk_size = group
    return group


def example_images(shape: ProgramShape, seed: int = 0, batch_dim: bool = True) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(shape.program_input_shape(batch_dim), generator=generator)


def export_program(
    model: nn.Module,
    shape: ProgramShape,
    outputs: Sequence[str] = DEFAULT_OUTPUTS,
    dtype: torch.dtype | None = None,
    batch_dim: bool = True,
) -> torch.export.ExportedProgram:
    """torch.export of the fixed-shape wrapper (non-strict; every shape is static)."""
    program = VGGTProgram(model, outputs, dtype, batch_dim).eval()
    with torch.no_grad():
        return torch.export.export(program, (example_images(shape, batch_dim=batch_dim),), strict=False)
