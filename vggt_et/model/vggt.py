"""VGGT: aggregator + camera, depth, point (and optional track) heads; official output dict."""

from __future__ import annotations

import torch
from torch import nn

from vggt_et.model.aggregator import Aggregator
from vggt_et.model.camera_head import CameraHead
from vggt_et.model.dpt_head import DPTHead
from vggt_et.model.presets import VGGTConfig


def seed_part(seed: int | None, part: int) -> None:
    """Seed the random init of one part of a model (aggregator 0, camera head 1, ...), if seeded."""
    if seed is not None:
        torch.manual_seed(seed * 1000 + part)


class VGGT(nn.Module):
    """Submodules are registered in the official order (point_head before depth_head), so
    `state_dict()` lists tensors exactly as the released checkpoint does."""

    def __init__(self, config: VGGTConfig | None = None, seed: int | None = None) -> None:
        """`seed` seeds each part separately, so a head's random weights do not depend on which
        other heads are built (a depth-only and a full model share their depth head)."""
        super().__init__()
        self.config = config = config or VGGTConfig()

        def seeded(offset: int) -> None:
            seed_part(seed, offset)

        dim = 2 * config.embed_dim
        dpt = {
            "dim_in": dim,
            "patch_size": config.patch_size,
            "features": config.dpt_features,
            "out_channels": config.dpt_out_channels,
            "intermediate_layer_idx": config.dpt_layers,
        }
        seeded(0)
        self.aggregator = Aggregator(config)
        seeded(1)
        self.camera_head = (
            CameraHead(
                dim,
                config.camera_trunk_depth,
                config.camera_num_heads,
                config.mlp_ratio,
                config.camera_iterations,
            )
            if config.enable_camera
            else None
        )
        seeded(2)
        self.point_head = (
            DPTHead(**dpt, output_dim=4, activation="inv_log", conf_activation="expp1")
            if config.enable_point
            else None
        )
        seeded(3)
        self.depth_head = (
            DPTHead(**dpt, output_dim=2, activation="exp", conf_activation="expp1")
            if config.enable_depth
            else None
        )
        self.track_head = None
        seeded(4)
        if config.enable_track:
            from vggt_et.model.track_head import build_track_head

            self.track_head = build_track_head(config)

    def predict(
        self, group: str, tokens: list[torch.Tensor], images: torch.Tensor, patch_start_idx: int
    ) -> tuple[torch.Tensor, ...]:
        """One output group's tensors ("depth", "points": values, conf; "camera": last pose_enc)."""
        if group == "depth":
            return self.depth_head(tokens, images, patch_start_idx)
        if group == "points":
            return self.point_head(tokens, images, patch_start_idx)
        if group == "camera":
            return (self.camera_head(tokens)[-1],)
        raise ValueError(f"VGGT has no output group {group!r}")

    def forward(
        self, images: torch.Tensor, query_points: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """images [B, S, 3, H, W] (or [S, 3, H, W]) in [0, 1] → the official prediction dict."""
        if images.dim() == 4:
            images = images.unsqueeze(0)
        if query_points is not None and query_points.dim() == 2:
            query_points = query_points.unsqueeze(0)
        tokens, patch_start_idx = self.aggregator(images)
        predictions: dict[str, torch.Tensor] = {}
        if self.camera_head is not None:
            pose_enc_list = self.camera_head(tokens)
            predictions["pose_enc"] = pose_enc_list[-1]
            predictions["pose_enc_list"] = pose_enc_list
        if self.depth_head is not None:
            predictions["depth"], predictions["depth_conf"] = self.depth_head(tokens, images, patch_start_idx)
        if self.point_head is not None:
            predictions["world_points"], predictions["world_points_conf"] = self.point_head(
                tokens, images, patch_start_idx
            )
        if self.track_head is not None and query_points is not None:
            track_list, vis, conf = self.track_head(tokens, images, patch_start_idx, query_points)
            predictions["track"], predictions["vis"], predictions["conf"] = track_list[-1], vis, conf
        if not self.training:
            predictions["images"] = images
        return predictions
