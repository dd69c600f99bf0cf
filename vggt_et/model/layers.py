"""Transformer building blocks shared by DINOv2, the aggregator and the camera head.

Module and parameter names follow the official checkpoint (norm1, attn.qkv, attn.q_norm, ls1.gamma,
mlp.fc1, ...), so a state dict loads without renaming.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from vggt_et.model.rope import RotaryPositionEmbedding2D


class Mlp(nn.Module):
    """Two linears with an activation in between (exact GELU by default)."""

    def __init__(
        self,
        in_features: int,
        hidden_features: int | None = None,
        out_features: int | None = None,
        act_layer: Callable[[], nn.Module] = nn.GELU,
        bias: bool = True,
    ) -> None:
        super().__init__()
        hidden_features = hidden_features or in_features
        out_features = out_features or in_features
        self.fc1 = nn.Linear(in_features, hidden_features, bias=bias)
        self.act = act_layer()
        self.fc2 = nn.Linear(hidden_features, out_features, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class LayerScale(nn.Module):
    """Per-channel residual-branch scale (`gamma`), as in DINOv2 and CaiT."""

    def __init__(self, dim: int, init_values: float = 1e-5) -> None:
        super().__init__()
        self.gamma = nn.Parameter(init_values * torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Attention(nn.Module):
    """Multi-head self-attention with optional per-head QK LayerNorm and 2-D RoPE.

    Uses `F.scaled_dot_product_attention` like the official model; rewriting it for mobile backends is
    the job of `vggt_et.passes`, not of the model.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        qkv_bias: bool = True,
        proj_bias: bool = True,
        qk_norm: bool = False,
        norm_layer: Callable[[int], nn.Module] = nn.LayerNorm,
        rope: RotaryPositionEmbedding2D | None = None,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.q_norm = norm_layer(self.head_dim) if qk_norm else nn.Identity()
        self.k_norm = norm_layer(self.head_dim) if qk_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim, bias=proj_bias)
        self.rope = rope

    def forward(
        self, x: torch.Tensor, pos: torch.Tensor | None = None, rope_len: int | None = None
    ) -> torch.Tensor:
        """`rope_len`: static RoPE table length (> every position); None sizes it from the data."""
        batch, tokens, channels = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        if self.rope is not None:
            if pos is None:
                raise ValueError("this attention layer uses RoPE and needs token positions")
            q = self.rope(q, pos, rope_len)
            k = self.rope(k, pos, rope_len)
        x = F.scaled_dot_product_attention(q, k, v)
        x = x.transpose(1, 2).reshape(batch, tokens, channels)
        return self.proj(x)


class Block(nn.Module):
    """Pre-norm transformer block: x + ls1(attn(norm1(x))), then x + ls2(mlp(norm2(x)))."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        proj_bias: bool = True,
        ffn_bias: bool = True,
        init_values: float | None = None,
        norm_eps: float = 1e-5,
        qk_norm: bool = False,
        rope: RotaryPositionEmbedding2D | None = None,
        attention: nn.Module | None = None,
    ) -> None:
        """`attention`: a ready attention module to use instead of `Attention` (VGGT-Ω's variant)."""
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        if attention is None:
            attention = Attention(
                dim, num_heads, qkv_bias=qkv_bias, proj_bias=proj_bias, qk_norm=qk_norm, rope=rope
            )
        self.attn = attention
        self.ls1 = LayerScale(dim, init_values) if init_values else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), bias=ffn_bias)
        self.ls2 = LayerScale(dim, init_values) if init_values else nn.Identity()

    def forward(
        self, x: torch.Tensor, pos: torch.Tensor | None = None, rope_len: int | None = None
    ) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x), pos=pos, rope_len=rope_len))
        return x + self.ls2(self.mlp(self.norm2(x)))
