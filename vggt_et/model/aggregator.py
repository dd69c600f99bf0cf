"""Alternating-attention aggregator: DINOv2 patch tokens + camera/register tokens through frame and
global blocks, returning every layer's [frame ‖ global] tokens."""

from __future__ import annotations

import torch
from torch import nn

from vggt_et.model.dinov2 import DinoVisionTransformer
from vggt_et.model.layers import Block
from vggt_et.model.presets import VGGTConfig
from vggt_et.model.rope import RotaryPositionEmbedding2D, patch_positions

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def first_and_rest_tokens(tokens: torch.Tensor, batch: int, frames: int) -> torch.Tensor:
    """[1, 2, n, C] learned tokens → [B*S, n, C]: index 0 for each scene's first frame, 1 for the rest."""
    first = tokens[:, 0:1].expand(batch, 1, *tokens.shape[2:])
    rest = tokens[:, 1:].expand(batch, frames - 1, *tokens.shape[2:])
    return torch.cat([first, rest], dim=1).reshape(batch * frames, *tokens.shape[2:])


class ImageNormalization(nn.Module):
    """ImageNet mean/std as non-persistent buffers (not in the checkpoint): the official models normalise
    [0, 1] images inside their forward."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("_resnet_mean", torch.empty(1, 1, 3, 1, 1), persistent=False)
        self.register_buffer("_resnet_std", torch.empty(1, 1, 3, 1, 1), persistent=False)
        self.reset_normalization()

    def reset_normalization(self) -> None:
        """(Re)fill the ImageNet mean/std buffers, e.g. after a meta-device build and weight assignment."""
        self._resnet_mean = torch.tensor(IMAGENET_MEAN, device="cpu").view(1, 1, 3, 1, 1)
        self._resnet_std = torch.tensor(IMAGENET_STD, device="cpu").view(1, 1, 3, 1, 1)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        return (images - self._resnet_mean) / self._resnet_std


class Aggregator(ImageNormalization):
    #: The attribute holding the blocks that attend across frames (read by fgq's labels and rotation).
    cross_frame_attr = "global_blocks"

    def __init__(self, config: VGGTConfig) -> None:
        super().__init__()
        c = config
        self.patch_size = c.patch_size
        self.depth = c.depth
        self.patch_embed = DinoVisionTransformer(
            img_size=c.img_size,
            patch_size=c.patch_size,
            embed_dim=c.embed_dim,
            depth=c.dino_depth,
            num_heads=c.dino_num_heads,
            mlp_ratio=c.mlp_ratio,
            num_register_tokens=c.num_register_tokens,
            init_values=1.0,
        )
        self.rope = RotaryPositionEmbedding2D(frequency=c.rope_freq)

        def make_blocks() -> nn.ModuleList:
            return nn.ModuleList(
                Block(
                    c.embed_dim,
                    c.num_heads,
                    c.mlp_ratio,
                    init_values=c.init_values,
                    qk_norm=True,
                    rope=self.rope,
                )
                for _ in range(c.depth)
            )

        self.frame_blocks = make_blocks()
        self.global_blocks = make_blocks()
        self.camera_token = nn.Parameter(torch.randn(1, 2, 1, c.embed_dim) * 1e-6)
        self.register_token = nn.Parameter(torch.randn(1, 2, c.num_register_tokens, c.embed_dim) * 1e-6)
        self.patch_start_idx = 1 + c.num_register_tokens

    def token_positions(
        self, batch_frames: int, height: int, width: int, device: torch.device
    ) -> torch.Tensor:
        """RoPE positions [B*S, P, 2]: patches at (row+1, col+1), the special tokens at (0, 0)."""
        grid_h, grid_w = height // self.patch_size, width // self.patch_size
        pos = patch_positions(batch_frames, grid_h, grid_w, device=device) + 1
        special = torch.zeros(batch_frames, self.patch_start_idx, 2, device=device, dtype=pos.dtype)
        return torch.cat([special, pos], dim=1)

    def forward(self, images: torch.Tensor) -> tuple[list[torch.Tensor], int]:
        """images [B, S, 3, H, W] in [0, 1] → (list of `depth` tensors [B, S, P, 2C], patch_start_idx)."""
        batch, frames, _, height, width = images.shape
        images = self.normalize(images)
        patch_tokens = self.patch_embed(images.reshape(batch * frames, 3, height, width))
        camera = first_and_rest_tokens(self.camera_token, batch, frames)
        register = first_and_rest_tokens(self.register_token, batch, frames)
        tokens = torch.cat([camera, register, patch_tokens], dim=1)
        _, num_tokens, channels = tokens.shape

        pos = self.token_positions(batch * frames, height, width, images.device)
        rope_len = max(height, width) // self.patch_size + 1  # static: > every position
        global_pos = pos.reshape(batch, frames * num_tokens, 2)

        outputs = []
        for frame_block, global_block in zip(self.frame_blocks, self.global_blocks, strict=True):
            tokens = frame_block(
                tokens.reshape(batch * frames, num_tokens, channels), pos=pos, rope_len=rope_len
            )
            frame_out = tokens.reshape(batch, frames, num_tokens, channels)
            tokens = global_block(
                tokens.reshape(batch, frames * num_tokens, channels), pos=global_pos, rope_len=rope_len
            )
            global_out = tokens.reshape(batch, frames, num_tokens, channels)
            outputs.append(torch.cat([frame_out, global_out], dim=-1))
        return outputs, self.patch_start_idx
