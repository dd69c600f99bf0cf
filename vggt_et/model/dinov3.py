"""DINOv3 ViT with storage tokens and axial RoPE: VGGT-Ω's patch embedder (`aggregator.patch_embed`).

Only what VGGT-Ω uses: no masking, no drop path, one image list. The aggregator consumes the
final-LayerNorm output of the patch tokens (cls and storage outputs are dropped).
"""

from __future__ import annotations

import torch
from torch import nn

from vggt_et.model.dinov2 import PatchEmbed
from vggt_et.model.omega_layers import AxialRotaryEmbedding, OmegaBlock


class DinoV3Backbone(nn.Module):
    def __init__(
        self,
        patch_size: int,
        embed_dim: int,
        depth: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        num_storage_tokens: int = 4,
        rope_base: float = 100.0,
        init_values: float = 1e-5,
    ) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.num_prefix_tokens = 1 + num_storage_tokens
        self.cls_token = nn.Parameter(torch.randn(1, 1, embed_dim) * 0.02)
        self.storage_tokens = nn.Parameter(torch.randn(1, num_storage_tokens, embed_dim) * 0.02)
        self.mask_token = nn.Parameter(torch.zeros(1, embed_dim), requires_grad=False)  # unused at inference
        self.patch_embed = PatchEmbed(patch_size, 3, embed_dim)
        self.rope_embed = AxialRotaryEmbedding(embed_dim // num_heads, rope_base)
        self.blocks = nn.ModuleList(
            OmegaBlock(embed_dim, num_heads, mlp_ratio, init_values, qk_norm=False) for _ in range(depth)
        )
        self.norm = nn.LayerNorm(embed_dim, eps=1e-5)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images [B, 3, H, W] (normalised) → final-norm patch tokens [B, (H/p)(W/p), C]."""
        height, width = images.shape[-2:]
        x = self.patch_embed(images)
        batch = x.shape[0]
        x = torch.cat(
            (self.cls_token.expand(batch, -1, -1), self.storage_tokens.expand(batch, -1, -1), x), dim=1
        )
        rope = self.rope_embed(height // self.patch_size, width // self.patch_size)
        for block in self.blocks:
            x = block(x, rope)
        return self.norm(x)[:, self.num_prefix_tokens :]
