"""VGGT's optional track head: dense tracking features (a DPT head) plus an iterative point tracker.

Given query points in the first frame, predicts where they are in every frame, with visibility and
confidence. Tensor names match the official checkpoint (`track_head.feature_extractor.*`,
`track_head.tracker.*`); eager numerics follow the official `vggt/heads/track_head.py` and
`track_modules/base_track_predictor.py`. Not meant for export.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn

from vggt_et.model.dpt_head import DPTHead
from vggt_et.model.track_predictor import BaseTrackerPredictor

if TYPE_CHECKING:
    from vggt_et.model.presets import VGGTConfig


class TrackHead(nn.Module):
    """DPT feature extractor (half resolution, no activation) followed by `BaseTrackerPredictor`."""

    def __init__(
        self,
        dim_in: int = 2048,
        patch_size: int = 14,
        features: int = 128,
        iters: int = 4,
        predict_conf: bool = True,
        stride: int = 2,
        corr_levels: int = 7,
        corr_radius: int = 4,
        hidden_size: int = 384,
        depth: int = 6,
        num_heads: int = 8,
        num_virtual_tracks: int = 64,
        out_channels: Sequence[int] = (256, 512, 1024, 1024),
        intermediate_layer_idx: Sequence[int] = (4, 11, 17, 23),
    ) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.iters = iters
        self.feature_extractor = DPTHead(
            dim_in=dim_in,
            patch_size=patch_size,
            features=features,
            out_channels=tuple(out_channels),
            intermediate_layer_idx=tuple(intermediate_layer_idx),
            pos_embed=False,
            feature_only=True,
            down_ratio=2,
        )
        self.tracker = BaseTrackerPredictor(
            stride=stride,
            corr_levels=corr_levels,
            corr_radius=corr_radius,
            latent_dim=features,
            hidden_size=hidden_size,
            depth=depth,
            predict_conf=predict_conf,
            num_heads=num_heads,
            num_virtual_tracks=num_virtual_tracks,
        )

    def forward(
        self,
        aggregated_tokens_list: Sequence[torch.Tensor],
        images: torch.Tensor,
        patch_start_idx: int,
        query_points: torch.Tensor,
        iters: int | None = None,
    ) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor | None]:
        """images [B,S,3,H,W] (H, W >= 140 with the default 7 pyramid levels); query_points [B,N,2]
        pixels (x, y) in frame 0. Returns (list of iters x [B,S,N,2], vis [B,S,N], conf [B,S,N])."""
        feature_maps = self.feature_extractor(aggregated_tokens_list, images, patch_start_idx)
        return self.tracker(query_points, feature_maps, iters=self.iters if iters is None else iters)


def build_track_head(config: VGGTConfig) -> TrackHead:
    """The track head of a preset: VGGT-1B's values come from the preset's defaults."""
    track = config.track
    return TrackHead(
        dim_in=2 * config.embed_dim,
        patch_size=config.patch_size,
        features=track.features,
        iters=track.iters,
        corr_levels=track.corr_levels,
        corr_radius=track.corr_radius,
        hidden_size=track.hidden_size,
        depth=track.depth,
        num_heads=track.num_heads,
        num_virtual_tracks=track.num_virtual_tracks,
        out_channels=config.dpt_out_channels,
        intermediate_layer_idx=config.dpt_layers,
    )
