"""VGGT-Ω's aggregator: DINOv3 patch tokens + camera/register tokens through frame blocks (RoPE) and
inter-frame blocks (global attention, or "register attention" at a few layers, where only camera and
register tokens attend across frames and patch tokens skip the block)."""

from __future__ import annotations

import torch
from torch import nn

from vggt_et.model.aggregator import ImageNormalization, first_and_rest_tokens
from vggt_et.model.dinov3 import DinoV3Backbone
from vggt_et.model.omega_config import VGGTOmegaConfig
from vggt_et.model.omega_layers import AxialRotaryEmbedding, OmegaBlock


def register_attention(block: nn.Module, tokens: torch.Tensor, prefix: int) -> torch.Tensor:
    """tokens [B, S, N, C]: run `block` over the first `prefix` tokens of every frame as one sequence
    [B, S*prefix, C]; the remaining (patch) tokens pass through untouched."""
    batch, frames, num_tokens, channels = tokens.shape
    special = tokens[:, :, :prefix].reshape(batch, frames * prefix, channels)
    special = block(special).reshape(batch, frames, prefix, channels)
    return torch.cat([special, tokens[:, :, prefix:]], dim=2)


class OmegaAggregator(ImageNormalization):
    #: The attribute holding the blocks that attend across frames (read by fgq's labels and rotation).
    cross_frame_attr = "inter_frame_blocks"

    def __init__(self, config: VGGTOmegaConfig) -> None:
        super().__init__()
        c = config
        self.patch_size = c.patch_size
        self.depth = c.depth
        self.patch_start_idx = c.prefix_tokens
        self.register_layers = frozenset(c.register_attention_layers)
        self.cached_layers = frozenset(c.cached_layers)
        self.camera_token = nn.Parameter(torch.randn(1, 2, 1, c.embed_dim) * 1e-3)
        self.register_token = nn.Parameter(torch.randn(1, 2, c.num_register_tokens, c.embed_dim) * 1e-3)
        self.patch_embed = DinoV3Backbone(
            patch_size=c.patch_size,
            embed_dim=c.embed_dim,
            depth=c.dino_depth,
            num_heads=c.dino_num_heads,
            mlp_ratio=c.mlp_ratio,
            num_storage_tokens=c.dino_storage_tokens,
            rope_base=c.rope_base,
            init_values=c.init_values,
        )
        self.rope_embed = AxialRotaryEmbedding(c.embed_dim // c.num_heads, c.rope_base)

        def make_blocks() -> nn.ModuleList:
            return nn.ModuleList(
                OmegaBlock(c.embed_dim, c.num_heads, c.mlp_ratio, c.init_values, qk_norm=True)
                for _ in range(c.depth)
            )

        self.frame_blocks = make_blocks()
        self.inter_frame_blocks = make_blocks()

    def forward(self, images: torch.Tensor) -> tuple[list[torch.Tensor | None], int]:
        """images [B, S, 3, H, W] in [0, 1] → (per layer [B, S, N, 2C] [frame ‖ inter-frame] tokens for the
        layers the heads read, None for the others; patch_start_idx)."""
        batch, frames, _, height, width = images.shape
        patch_tokens = self.patch_embed(self.normalize(images).reshape(batch * frames, 3, height, width))
        camera = first_and_rest_tokens(self.camera_token, batch, frames)
        register = first_and_rest_tokens(self.register_token, batch, frames)
        tokens = torch.cat([camera, register, patch_tokens], dim=1)
        _, num_tokens, channels = tokens.shape
        rope = self.rope_embed(height // self.patch_size, width // self.patch_size)

        outputs: list[torch.Tensor | None] = []
        for layer, (frame_block, inter_block) in enumerate(
            zip(self.frame_blocks, self.inter_frame_blocks, strict=True)
        ):
            tokens = frame_block(tokens.reshape(batch * frames, num_tokens, channels), rope)
            frame_out = tokens.reshape(batch, frames, num_tokens, channels)
            if layer in self.register_layers:
                tokens = register_attention(inter_block, frame_out, self.patch_start_idx)
            else:
                tokens = inter_block(tokens.reshape(batch, frames * num_tokens, channels))
                tokens = tokens.reshape(batch, frames, num_tokens, channels)
            outputs.append(torch.cat([frame_out, tokens], dim=-1) if layer in self.cached_layers else None)
        return outputs, self.patch_start_idx
