"""A small conv + linear + attention program, so the runner and the benchmark have a real `.pte` to chew on.

It has two inputs and two outputs on purpose: every path that handles "the i-th input file" or "the i-th
output" is exercised with more than one of them.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F

from vggt_et.utils.files import atomic_output_path

TOY_QUANTS = ("fp32", "int8")


class ToyPatchAttention(torch.nn.Module):
    """Patchify with a conv, one attention block over the patches, a linear head."""

    def __init__(self, channels: int = 32, patch: int = 4, heads: int = 2) -> None:
        super().__init__()
        self.heads = heads
        self.patch_embed = torch.nn.Conv2d(3, channels, kernel_size=patch, stride=patch)
        self.qkv = torch.nn.Linear(channels, 3 * channels)
        self.proj = torch.nn.Linear(channels, channels)
        self.head = torch.nn.Linear(channels, 8)

    def forward(self, image: torch.Tensor, shift: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = self.patch_embed(image).flatten(2).transpose(1, 2) + shift  # [B, N, C]
        batch, count, channels = tokens.shape
        head_dim = channels // self.heads
        qkv = self.qkv(tokens).reshape(batch, count, 3, self.heads, head_dim).permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        tokens = tokens + self.proj(attended.transpose(1, 2).reshape(batch, count, channels))
        return self.head(tokens), tokens.mean(dim=1)


def toy_inputs(seed: int = 0, size: int = 32, channels: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Deterministic example inputs matching `ToyPatchAttention`'s export shapes."""
    generator = torch.Generator().manual_seed(seed)
    image = torch.rand(1, 3, size, size, generator=generator)
    shift = torch.randn(1, 1, channels, generator=generator) * 0.1
    return image, shift


def _quantize_int8(
    model: torch.nn.Module, example: tuple[torch.Tensor, ...], channels: int
) -> torch.nn.Module:
    """PT2E static int8 with XNNPACK's symmetric config, calibrated on a few deterministic batches."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config())
    graph = torch.export.export(model, example, strict=False).module()
    prepared = prepare_pt2e(graph, quantizer)
    for seed in range(4):
        prepared(*toy_inputs(seed, channels=channels))
    return convert_pt2e(prepared)


def build_toy_pte(path: str | os.PathLike, quant: str = "fp32", seed: int = 0, channels: int = 32) -> Path:
    """Export, lower to XNNPACK and write the toy as a `.pte` (atomically); returns the path.

    `channels` scales the weights (about 16 * channels**2 bytes in fp32), for memory measurements.
    """
    if quant not in TOY_QUANTS:
        raise ValueError(f"unknown toy quant {quant!r}; use one of {', '.join(TOY_QUANTS)}")
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    torch.manual_seed(seed)
    model = ToyPatchAttention(channels=channels).eval()
    example = toy_inputs(seed, channels=channels)
    with torch.no_grad():
        if quant == "int8":
            model = _quantize_int8(model, example, channels)
        exported = torch.export.export(model, example, strict=False)
    program = to_edge_transform_and_lower(exported, partitioner=[XnnpackPartitioner()]).to_executorch()
    target = Path(path)
    with atomic_output_path(target) as temp, open(temp, "wb") as stream:
        program.write_to_file(stream)
    return target


def default_cache_dir() -> Path:
    """Where built toy programs (and ci_build.sh's aarch64 wheel) are kept: $VGGT_ET_CACHE or ~/.cache/vggt-et."""
    return Path(os.environ.get("VGGT_ET_CACHE") or Path.home() / ".cache" / "vggt-et")


def cached_toy_pte(quant: str = "fp32", cache_dir: str | os.PathLike | None = None) -> Path:
    """`build_toy_pte` into the cache, keyed by this file's contents and the torch/executorch versions, so
    repeated test runs skip the export (about 10 s per program)."""
    import hashlib
    from importlib.metadata import version

    key = Path(__file__).read_bytes() + f"{torch.__version__}/{version('executorch')}".encode()
    digest = hashlib.sha256(key).hexdigest()[:12]
    target = Path(cache_dir or default_cache_dir() / "toy") / f"toy-{quant}-{digest}.pte"
    return target if target.is_file() else build_toy_pte(target, quant)
