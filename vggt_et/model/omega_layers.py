"""VGGT-Ω attention pieces: DINOv3-style axial RoPE, masked-K-bias qkv, and the block that uses them.

What differs from VGGT's `layers.Attention`: RoPE comes as precomputed (sin, cos) tables for the patch
grid and leaves the leading (cls / storage / camera / register) tokens unrotated; the qkv linear's
checkpoint carries a `bias_mask` (1 for Q and V, 0 for K) that we fold into the bias at load, so the
forward is a plain linear and no compiled program carries the mask; and the QK norms are registered
before qkv, as in the checkpoint's tensor order.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from vggt_et.model.layers import Block
from vggt_et.model.rope import RotaryPositionEmbedding2D

RopeTables = tuple[torch.Tensor, torch.Tensor]  # (sin, cos), each [grid_h * grid_w, head_dim]


class AxialRotaryEmbedding(nn.Module):
    """sin/cos tables for a patch grid: coordinates in [-1, 1] scaled by the longer side ("max").

    The `periods` buffer is part of the checkpoint; tables are recomputed from it for each grid (a
    constant once the input shape is fixed).
    """

    def __init__(self, head_dim: int, base: float = 100.0) -> None:
        super().__init__()
        if head_dim % 4:
            raise ValueError(f"axial RoPE needs a head dim divisible by 4, got {head_dim}")
        exponents = 2 * torch.arange(head_dim // 4, dtype=torch.float32) / (head_dim // 2)
        self.register_buffer("periods", base**exponents, persistent=True)

    def forward(self, grid_h: int, grid_w: int) -> RopeTables:
        """(sin, cos) [grid_h*grid_w, head_dim]: row angles then column angles, repeated twice."""
        longest = max(grid_h, grid_w)
        device = self.periods.device
        rows = torch.arange(0.5, grid_h, dtype=torch.float32, device=device) / longest
        cols = torch.arange(0.5, grid_w, dtype=torch.float32, device=device) / longest
        coords = torch.stack(torch.meshgrid(rows, cols, indexing="ij"), dim=-1).flatten(0, 1)
        coords = 2.0 * coords - 1.0  # [HW, 2] in [-1, 1]
        angles = 2 * math.pi * coords[:, :, None] / self.periods[None, None, :]  # [HW, 2, D/4]
        angles = angles.flatten(1, 2).tile(2)  # [HW, D]
        return torch.sin(angles), torch.cos(angles)


def rotate_patch_tokens(x: torch.Tensor, rope: RopeTables) -> torch.Tensor:
    """x [B, heads, N, D]: rotate the last len(sin) tokens; the N - len(sin) leading tokens stay as they are.

    The tables (built in float32) are cast to x's dtype, so a float16 model stays float16 with no casts left
    in a compiled program (the tables fold to constants); in float32 this is the official arithmetic."""
    sin, cos = rope
    if sin.dtype != x.dtype:  # a static check: float32 graphs carry no cast at all
        sin, cos = sin.to(x.dtype), cos.to(x.dtype)
    prefix = x.shape[-2] - sin.shape[-2]
    if prefix < 0:
        raise ValueError(f"RoPE tables cover {sin.shape[-2]} tokens but the sequence has {x.shape[-2]}")
    patches = x[..., prefix:, :]
    rotated = patches * cos + RotaryPositionEmbedding2D.rotate_half(patches) * sin
    return torch.cat((x[..., :prefix, :], rotated), dim=-2)


class MaskedKBiasLinear(nn.Linear):
    """The qkv linear of DINOv3/VGGT-Ω: checkpoints carry `bias_mask` (K third 0), which we fold at load.

    `state_dict()` still lists `<prefix>bias_mask` (made on the fly, not a buffer), so the tensor names match
    the official checkpoint; loading multiplies the bias by the mask and drops it, so the module holds
    only weight and bias and its forward is `F.linear`.
    """

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__(in_features, out_features, bias=True)
        if out_features % 3:
            raise ValueError(f"qkv output size {out_features} is not a multiple of 3")
        with torch.no_grad():
            self.bias.mul_(self.k_mask(self.bias.device))  # random init: the K bias is zero, as after a fold
        self.register_state_dict_post_hook(_emit_bias_mask)

    def k_mask(self, device: torch.device | str) -> torch.Tensor:
        """1 for the Q and V thirds of the output, 0 for the K third (what the released weights hold)."""
        third = self.out_features // 3
        mask = torch.ones(self.out_features, device=device)
        mask[third : 2 * third] = 0.0
        return mask

    def _load_from_state_dict(  # noqa: PLR0913 (torch's signature)
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ) -> None:
        mask = state_dict.pop(prefix + "bias_mask", None)
        bias = state_dict.get(prefix + "bias")
        if mask is None:
            missing_keys.append(prefix + "bias_mask")
        elif bias is not None:
            if mask.shape != bias.shape or not bool(torch.isfinite(mask).all()):
                error_msgs.append(f"{prefix}bias_mask must be a finite tensor of shape {list(bias.shape)}")
            else:
                state_dict[prefix + "bias"] = bias * mask.to(bias.dtype)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )


def _emit_bias_mask(module: MaskedKBiasLinear, state_dict: dict, prefix: str, local_metadata: dict) -> None:
    state_dict[prefix + "bias_mask"] = module.k_mask(module.bias.device)


class OmegaAttention(nn.Module):
    """Self-attention with masked-K-bias qkv, optional per-head QK LayerNorm and prefix-excluding RoPE."""

    def __init__(self, dim: int, num_heads: int, qk_norm: bool) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        # Registration order = the checkpoint's tensor order (q_norm, k_norm before qkv).
        self.q_norm = nn.LayerNorm(self.head_dim, eps=1e-5) if qk_norm else nn.Identity()
        self.k_norm = nn.LayerNorm(self.head_dim, eps=1e-5) if qk_norm else nn.Identity()
        self.qkv = MaskedKBiasLinear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, rope: RopeTables | None = None) -> torch.Tensor:
        batch, tokens, channels = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            q, k = rotate_patch_tokens(q, rope), rotate_patch_tokens(k, rope)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(batch, tokens, channels))


class OmegaBlock(Block):
    """VGGT's pre-norm block (same names, eps 1e-5) around `OmegaAttention`."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, init_values: float, qk_norm: bool) -> None:
        super().__init__(
            dim,
            num_heads,
            mlp_ratio,
            init_values=init_values,
            norm_eps=1e-5,
            attention=OmegaAttention(dim, num_heads, qk_norm),
        )

    def forward(self, x: torch.Tensor, rope: RopeTables | None = None) -> torch.Tensor:  # type: ignore[override]
        x = x + self.ls1(self.attn(self.norm1(x), rope))
        return x + self.ls2(self.mlp(self.norm2(x)))
