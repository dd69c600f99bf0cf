"""VGGT-Ω: aggregator + camera and dense (depth) heads; the official output dict, float32 on any device.

The official forward autocasts the aggregator to bf16 on CUDA; ours runs in the model's dtype (reduced
precision is the compiler's business).
"""

from __future__ import annotations

import torch
from torch import nn

from vggt_et.model.omega_aggregator import OmegaAggregator
from vggt_et.model.omega_config import VGGTOmegaConfig
from vggt_et.model.omega_heads import OmegaCameraHead, OmegaDenseHead
from vggt_et.model.vggt import seed_part


class VGGTOmega(nn.Module):
    """Submodules in the official order (aggregator, camera_head, dense_head), so `state_dict()` lists
    tensors as the released checkpoint does."""

    point_head = None  # VGGT-Ω has no point or track head
    track_head = None

    def __init__(self, config: VGGTOmegaConfig | None = None, seed: int | None = None) -> None:
        """`seed` seeds each part separately, as in `VGGT`: a head's random weights do not depend on
        which other heads are built."""
        super().__init__()
        self.config = config = config or VGGTOmegaConfig()

        dim = 2 * config.embed_dim
        seed_part(seed, 0)
        self.aggregator = OmegaAggregator(config)
        seed_part(seed, 1)
        self.camera_head = (
            OmegaCameraHead(
                dim, config.camera_trunk_depth, config.camera_num_heads, config.mlp_ratio, config.init_values
            )
            if config.enable_camera
            else None
        )
        seed_part(seed, 3)
        self.dense_head = (
            OmegaDenseHead(
                dim, config.patch_size, config.dpt_features, config.dpt_out_channels, config.dpt_layers
            )
            if config.enable_depth
            else None
        )

    @property
    def depth_head(self) -> OmegaDenseHead | None:
        """The dense head under the name VGGT's depth head has (what the export wrapper asks for)."""
        return self.dense_head

    def predict(
        self, group: str, tokens: list[torch.Tensor | None], images: torch.Tensor, patch_start_idx: int
    ) -> tuple[torch.Tensor, ...]:
        """One output group's tensors ("depth": depth, depth_conf; "camera": pose_enc)."""
        if group == "depth":
            return self.dense_head(tokens, images, patch_start_idx)
        if group == "camera":
            return (self.camera_head(tokens, patch_start_idx),)
        raise ValueError(f"VGGT-Ω has no output group {group!r}")

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """images [B, S, 3, H, W] (or [S, 3, H, W]) in [0, 1], H and W multiples of the patch size."""
        if images.dim() == 4:
            images = images.unsqueeze(0)
        tokens, patch_start_idx = self.aggregator(images)
        predictions = {"camera_and_register_tokens": tokens[-1][:, :, :patch_start_idx].contiguous()}
        if self.camera_head is not None:
            predictions["pose_enc"] = self.camera_head(tokens, patch_start_idx)
        if self.dense_head is not None:
            predictions["depth"], predictions["depth_conf"] = self.dense_head(tokens, images, patch_start_idx)
        if not self.training:
            predictions["images"] = images
        return predictions
