"""DINOv2 ViT with register tokens: VGGT's patch embedder (`aggregator.patch_embed`).

Only what VGGT uses: no masking, no chunked blocks, no drop path. The aggregator consumes the
final-LayerNorm output of the patch tokens (cls and register outputs are dropped).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from vggt_et.model.layers import Block


class PatchEmbed(nn.Module):
    """Non-overlapping patch convolution, flattened row-major to tokens [B, Np, C]."""

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        if height % self.patch_size or width % self.patch_size:
            raise ValueError(f"image size {height}x{width} is not a multiple of patch size {self.patch_size}")
        return self.proj(x).flatten(2).transpose(1, 2)


class DinoVisionTransformer(nn.Module):
    def __init__(
        self,
        img_size: int,
        patch_size: int,
        embed_dim: int,
        depth: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        num_register_tokens: int = 4,
        init_values: float = 1.0,
    ) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.num_register_tokens = num_register_tokens
        grid = img_size // patch_size
        self.patch_embed = PatchEmbed(patch_size, 3, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, grid * grid + 1, embed_dim))
        self.register_tokens = nn.Parameter(torch.zeros(1, num_register_tokens, embed_dim))
        self.mask_token = nn.Parameter(torch.zeros(1, embed_dim), requires_grad=False)  # unused at inference
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio, init_values=init_values, norm_eps=1e-6)
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)

    def interpolate_pos_encoding(
        self, num_patches: int, height: int, width: int, dtype: torch.dtype | None = None
    ) -> torch.Tensor:
        """Position embedding for an H×W image: the stored grid, bicubic-antialias resized when needed.

        Resized in float32 with `size=` (interpolate_offset 0), as DINOv2 in VGGT does; the stored table
        is used as is only for a square image with the stored patch count.
        """
        stored = self.pos_embed.shape[1] - 1
        if num_patches == stored and height == width:
            return self.pos_embed
        pos_embed = self.pos_embed.float()
        cls_pos, patch_pos = pos_embed[:, :1], pos_embed[:, 1:]
        side = int(math.sqrt(stored))
        dim = pos_embed.shape[-1]
        grid_h, grid_w = height // self.patch_size, width // self.patch_size
        patch_pos = F.interpolate(
            patch_pos.reshape(1, side, side, dim).permute(0, 3, 1, 2),
            size=(grid_h, grid_w),
            mode="bicubic",
            antialias=True,
        )
        patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(1, grid_h * grid_w, dim)
        return torch.cat((cls_pos, patch_pos), dim=1).to(dtype or self.pos_embed.dtype)

    def prepare_tokens(self, images: torch.Tensor) -> torch.Tensor:
        """[cls, registers, patches]; position embedding added to cls and patches only."""
        height, width = images.shape[-2:]
        x = self.patch_embed(images)
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        x = x + self.interpolate_pos_encoding(x.shape[1] - 1, height, width, x.dtype)
        registers = self.register_tokens.expand(x.shape[0], -1, -1)
        return torch.cat((x[:, :1], registers, x[:, 1:]), dim=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Final-norm patch tokens [B, Np, C]."""
        x = self.prepare_tokens(images)
        for block in self.blocks:
            x = block(x)
        x = self.norm(x)
        return x[:, 1 + self.num_register_tokens :]
