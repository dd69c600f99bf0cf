"""A small pre-LN ViT-like transformer with two task heads, for testing the W4 machinery without VGGT.

Why its own module: tests and ``benchmarks/w4_toy_outliers.py`` need the same model, the same outlier
injection (a few residual channels 20-100x larger, heavy-tailed weights, as in trained ViTs) and the same
rotation spec. Block layout mirrors DINOv2/VGGT blocks: fused qkv, LayerScale, GELU MLP.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from vggt_et.quantizers.rotation import RotationSpec


class ToyAttention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, dim = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, dim))


class ToyMlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class LayerScale(nn.Module):
    def __init__(self, dim: int, init: float = 1.0) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), init))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class ToyBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: int = 4) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = ToyAttention(dim, heads)
        self.ls1 = LayerScale(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = ToyMlp(dim, mlp_ratio * dim)
        self.ls2 = LayerScale(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class ToyTransformer(nn.Module):
    """tokens [B, N, in_dim] -> {"pose": [B, 9] from the mean token, "depth": [B, N, 1] per token}."""

    def __init__(
        self, in_dim: int = 16, dim: int = 128, depth: int = 4, heads: int = 2, tokens: int = 32
    ) -> None:
        super().__init__()
        self.embed = nn.Linear(in_dim, dim)
        self.pos = nn.Parameter(torch.randn(tokens, dim) * 0.02)
        self.blocks = nn.ModuleList([ToyBlock(dim, heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.pose_head = nn.Linear(dim, 9)
        self.depth_head = nn.Linear(dim, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.embed(x) + self.pos
        for block in self.blocks:
            h = block(h)
        h = self.norm(h)
        return {"pose": self.pose_head(h.mean(dim=1)), "depth": self.depth_head(h)}


def make_outlier_transformer(
    *,
    seed: int = 0,
    dim: int = 128,
    depth: int = 4,
    heads: int = 2,
    tokens: int = 32,
    outlier_channels: int = 4,
    outlier_scale: float = 50.0,
    weight_df: float = 3.0,
) -> ToyTransformer:
    """Toy model with trained-ViT-like statistics: heavy-tailed (Student-t) weights, random LayerNorm and
    LayerScale affines, and ``outlier_channels`` residual channels about ``outlier_scale`` times larger."""
    if outlier_channels >= dim:
        raise ValueError(f"outlier_channels ({outlier_channels}) must be smaller than dim ({dim})")
    torch.manual_seed(seed)
    model = ToyTransformer(dim=dim, depth=depth, heads=heads, tokens=tokens)
    student = torch.distributions.StudentT(weight_df)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Linear):
                fan_in = module.in_features
                sample = student.sample(module.weight.shape)
                module.weight.copy_(sample / sample.std() / fan_in**0.5)
                module.bias.copy_(torch.randn(module.out_features) * 0.02)
            elif isinstance(module, nn.LayerNorm):
                module.weight.copy_(1.0 + 0.2 * torch.randn(dim))
                module.bias.copy_(0.05 * torch.randn(dim))
            elif isinstance(module, LayerScale):
                module.gamma.copy_(0.5 + 0.2 * torch.rand(dim))
        channels = torch.randperm(dim)[:outlier_channels]
        model.embed.weight[channels] *= outlier_scale
        model.embed.bias[channels] = outlier_scale
        model.pos[:, channels] *= outlier_scale
    return model


def toy_rotation_spec(model: ToyTransformer) -> RotationSpec:
    """Every residual-stream writer and reader of ``ToyTransformer``, for ``fold_residual_rotation``."""
    dim = model.embed.out_features
    writers = []
    norm_readers: list[tuple[nn.Module, list[nn.Module]]] = []
    value_pairs = []
    for block in model.blocks:
        writers += [(block.attn.proj, block.ls1.gamma), (block.mlp.fc2, block.ls2.gamma)]
        norm_readers += [(block.norm1, [block.attn.qkv]), (block.norm2, [block.mlp.fc1])]
        value_pairs.append((block.attn.qkv, block.attn.proj, dim // block.attn.heads, 2 * dim))
    norm_readers.append((model.norm, [model.pose_head, model.depth_head]))
    return RotationSpec(
        dim=dim,
        entry_writers=[model.embed],
        stream_parameters=[model.pos],
        writers=writers,
        norm_readers=norm_readers,
        value_output_pairs=value_pairs,
    )


def toy_tasks() -> dict[str, Callable[[dict[str, torch.Tensor]], torch.Tensor]]:
    """Task outputs for the Fisher pass (FGQ differentiates each task output's sum)."""
    return {"pose": lambda outputs: outputs["pose"], "depth": lambda outputs: outputs["depth"]}


def toy_samples(
    count: int, *, batch: int = 2, tokens: int = 32, in_dim: int = 16, seed: int = 1
) -> list[torch.Tensor]:
    """Heavy-tailed input tokens (Gaussian times a log-normal per-token scale), one tensor per sample."""
    generator = torch.Generator().manual_seed(seed)
    samples = []
    for _ in range(count):
        normal = torch.randn(batch, tokens, in_dim, generator=generator)
        scale = torch.exp(0.5 * torch.randn(batch, tokens, 1, generator=generator))
        samples.append(normal * scale)
    return samples
