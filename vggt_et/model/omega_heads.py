"""VGGT-Ω's heads: a camera head (plain blocks over camera/register tokens, then an MLP to the 9-number
pose encoding) and a dense head (VGGT's DPT trunk, then 1×1 convs and a pixel shuffle to depth + conf)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from vggt_et.model.dpt_head import DPTTrunk, add_pos_embed
from vggt_et.model.omega_layers import OmegaBlock

POSE_ENCODING_SIZE = 9  # translation 3, quaternion 4, field of view 2


class OmegaCameraHead(nn.Module):
    def __init__(
        self, dim_in: int, trunk_depth: int, num_heads: int, mlp_ratio: float, init_values: float
    ) -> None:
        super().__init__()
        self.token_norm = nn.LayerNorm(dim_in, eps=1e-5)
        self.trunk = nn.ModuleList(
            OmegaBlock(dim_in, num_heads, mlp_ratio, init_values, qk_norm=False) for _ in range(trunk_depth)
        )
        self.trunk_norm = nn.LayerNorm(dim_in, eps=1e-5)
        self.camera_branch = nn.Sequential(
            nn.Linear(dim_in, dim_in // 2), nn.GELU(), nn.Linear(dim_in // 2, POSE_ENCODING_SIZE)
        )

    def forward(
        self, aggregated_tokens_list: Sequence[torch.Tensor | None], patch_start_idx: int
    ) -> torch.Tensor:
        """pose_enc [B, S, 9] from the last layer's camera and register tokens of every frame."""
        tokens = aggregated_tokens_list[-1]
        batch, frames = tokens.shape[:2]
        x = self.token_norm(tokens[:, :, :patch_start_idx])
        x = x.reshape(batch, frames * patch_start_idx, -1)
        for block in self.trunk:
            x = block(x)
        camera = self.trunk_norm(x.reshape(batch, frames, patch_start_idx, -1)[:, :, 0])
        raw = self.camera_branch(camera)
        return torch.cat([raw[..., :7], F.relu(raw[..., 7:]) + 0.01], dim=-1)  # fov kept positive


class OmegaDenseHead(DPTTrunk):
    """Depth and confidence at full resolution: the fused 1/4-scale map is projected to shuffle² channels
    per output and pixel-shuffled up (shuffle = patch_size / 4)."""

    def __init__(
        self,
        dim_in: int,
        patch_size: int,
        features: int,
        out_channels: Sequence[int],
        intermediate_layer_idx: Sequence[int],
    ) -> None:
        # VGGT-Ω's fusion blocks use a ReLU that is not in place: the residual skip is x itself.
        super().__init__(dim_in, patch_size, features, out_channels, intermediate_layer_idx, relu_skip=False)
        self.shuffle = patch_size // 4
        self.proj = nn.Conv2d(features, self.shuffle**2, kernel_size=1)
        self.proj_conf = nn.Conv2d(features, self.shuffle**2, kernel_size=1)

    def full_resolution_bytes(self, height: int, width: int, itemsize: int = 4) -> int:
        """One frame's widest map: the finest level and the fused features live at a quarter of the
        resolution (the pixel-shuffled outputs have one channel)."""
        channels = max(self.resize_layers[0].out_channels, self.scratch.refinenet1.out_conv.out_channels)
        return channels * (height // 4) * (width // 4) * itemsize

    def _forward_frames(
        self,
        aggregated_tokens_list: Sequence[torch.Tensor | None],
        images: torch.Tensor,
        patch_start_idx: int,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(depth [B, S, H, W, 1], depth_conf [B, S, H, W]) of these frames (DPTTrunk.forward groups them)."""
        batch, frames, _, height, width = images.shape
        levels = self.token_levels(aggregated_tokens_list, images, patch_start_idx)
        fused = self.fuse_levels(levels, last_size=levels[0].shape[2:])  # no final upsampling
        fused = add_pos_embed(fused, width, height)
        depth = F.pixel_shuffle(self.proj(fused), self.shuffle).permute(0, 2, 3, 1)
        conf = F.pixel_shuffle(self.proj_conf(fused), self.shuffle).permute(0, 2, 3, 1).squeeze(-1)
        depth, conf = torch.exp(depth), 1.0 + torch.exp(conf)
        return depth.view(batch, frames, *depth.shape[1:]), conf.view(batch, frames, *conf.shape[1:])
