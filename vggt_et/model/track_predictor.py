"""The iterative point tracker of VGGT's track head (`track_head.tracker.*` in the checkpoint).

Eager numerics follow the official `vggt/heads/track_modules/base_track_predictor.py` (verified
bit-identical on CPU with shared random weights).
"""

from __future__ import annotations

import torch
from torch import nn

from vggt_et.model.layers import Mlp
from vggt_et.model.track_modules import (
    CorrelationPyramid,
    EfficientUpdateFormer,
    flow_embedding_2d,
    sample_features_at_points,
    sincos_pos_embed_2d,
)


class BaseTrackerPredictor(nn.Module):
    """Refines tracks of query points through all frames of a feature-map sequence.

    Each iteration builds, for every (track, frame), a token from the displacement since frame 0, the
    local correlation with the track's feature and the feature itself; the update transformer predicts
    a coordinate delta and a feature delta. Frame 0 always keeps the query position.
    """

    def __init__(
        self,
        stride: int = 1,
        corr_levels: int = 5,
        corr_radius: int = 4,
        latent_dim: int = 128,
        hidden_size: int = 384,
        use_spaceatt: bool = True,
        depth: int = 6,
        max_scale: int = 518,
        predict_conf: bool = True,
        num_heads: int = 8,
        num_virtual_tracks: int = 64,
        mlp_ratio: float = 4.0,
    ) -> None:
        super().__init__()
        if latent_dim % 4:
            # latent_dim/2 flow channels must be even, and so must half of the 3*latent_dim+4 token width.
            raise ValueError(f"latent_dim must be a multiple of 4, got {latent_dim}")
        self.stride = stride
        self.latent_dim = latent_dim
        self.corr_levels = corr_levels
        self.corr_radius = corr_radius
        self.max_scale = max_scale
        self.predict_conf = predict_conf
        self.flows_emb_dim = latent_dim // 2
        # token = flow code (2 * latent/2) + flow/max_scale twice (4) + correlation + track feature
        self.transformer_dim = 3 * latent_dim + 4

        self.corr_mlp = Mlp(
            in_features=corr_levels * (2 * corr_radius + 1) ** 2,
            hidden_features=hidden_size,
            out_features=latent_dim,
        )
        # index 0 marks the query frame, index 1 every other frame
        self.query_ref_token = nn.Parameter(torch.randn(1, 2, self.transformer_dim))
        self.updateformer = EfficientUpdateFormer(
            input_dim=self.transformer_dim,
            hidden_size=hidden_size,
            output_dim=latent_dim + 2,
            depth=depth,
            num_heads=num_heads,
            mlp_ratio=mlp_ratio,
            num_virtual_tracks=num_virtual_tracks,
            add_space_attn=use_spaceatt,
        )
        self.fmap_norm = nn.LayerNorm(latent_dim)
        self.ffeat_norm = nn.GroupNorm(1, latent_dim)
        self.ffeat_updater = nn.Sequential(nn.Linear(latent_dim, latent_dim), nn.GELU())
        self.vis_predictor = nn.Sequential(nn.Linear(latent_dim, 1))
        if predict_conf:
            self.conf_predictor = nn.Sequential(nn.Linear(latent_dim, 1))

    def _frame_tokens(self, frames: int) -> torch.Tensor:
        """[1, S, D]: the query-frame token for frame 0, the other-frame token for frames 1..S-1."""
        other = self.query_ref_token[:, 1:2].expand(-1, frames - 1, -1)
        return torch.cat([self.query_ref_token[:, 0:1], other], dim=1)

    def _score(self, predictor: nn.Module, track_feats: torch.Tensor) -> torch.Tensor:
        """Per-(frame, track) probability from a linear head on the final track features."""
        return torch.sigmoid(predictor(track_feats).squeeze(-1))

    def forward(
        self, query_points: torch.Tensor, fmaps: torch.Tensor, iters: int = 6
    ) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor | None]:
        """query_points [B,N,2] (x, y in image pixels), fmaps [B,S,C,HH,WW] with HH = H/stride.

        Returns (coords per iteration, each [B,S,N,2] in image pixels; visibility [B,S,N];
        confidence [B,S,N] or None), all probabilities after a sigmoid.
        """
        batch, tracks, _ = query_points.shape
        frames, height, width = fmaps.shape[1], fmaps.shape[3], fmaps.shape[4]
        if min(height, width) < 2 ** (self.corr_levels - 1):
            raise ValueError(
                f"feature maps of {height}x{width} are too small for {self.corr_levels} correlation levels "
                f"(need >= {2 ** (self.corr_levels - 1)} per side, i.e. images >= "
                f"{2 ** (self.corr_levels - 1) * self.stride} pixels, rounded up to the patch size)"
            )

        fmaps = self.fmap_norm(fmaps.permute(0, 1, 3, 4, 2)).permute(0, 1, 4, 2, 3)
        queries = query_points / float(self.stride)  # feature-map pixels
        coords = queries.unsqueeze(1).repeat(1, frames, 1, 1)  # [B, S, N, 2]
        track_feats = sample_features_at_points(fmaps[:, 0], queries).unsqueeze(1).repeat(1, frames, 1, 1)
        pyramid = CorrelationPyramid(fmaps, num_levels=self.corr_levels, radius=self.corr_radius)

        # Loop invariants (the official code recomputes them every iteration, with the same values):
        # a fixed 2-D position code read at each query point, and the query/other frame tokens.
        pos_embed = sincos_pos_embed_2d(self.transformer_dim, height, width, device=fmaps.device)
        # The table stays float32 and the frame tokens take the token dtype, as in the official code,
        # so reduced-precision runs promote the same way.
        query_pos = sample_features_at_points(pos_embed.expand(batch, -1, -1, -1), queries)
        query_pos = query_pos.reshape(batch * tracks, 1, self.transformer_dim)
        frame_tokens = self._frame_tokens(frames)

        coord_preds = []
        for _ in range(iters):
            coords = coords.detach()
            corr = pyramid.sample(track_feats, coords)  # [B, S, N, L]
            corr = self.corr_mlp(corr.transpose(1, 2).reshape(batch * tracks, frames, -1))

            flows = (coords - coords[:, 0:1]).transpose(1, 2).reshape(batch * tracks, frames, 2)
            scaled_flows = flows / self.max_scale
            flow_code = torch.cat(
                [flow_embedding_2d(flows, self.flows_emb_dim), scaled_flows, scaled_flows], -1
            )

            feats = track_feats.transpose(1, 2).reshape(batch * tracks, frames, self.latent_dim)
            # Same order of additions as the official code: (token + position code) + frame token.
            tokens = torch.cat([flow_code, corr, feats], dim=2) + query_pos
            tokens = tokens + frame_tokens.to(tokens.dtype)

            delta = self.updateformer(tokens.view(batch, tracks, frames, -1))  # [B, N, S, latent+2]
            delta_coords = delta[..., :2]
            delta_feats = delta[..., 2:].reshape(-1, self.latent_dim)

            feats = self.ffeat_updater(self.ffeat_norm(delta_feats)) + feats.reshape(-1, self.latent_dim)
            track_feats = feats.view(batch, tracks, frames, self.latent_dim).transpose(1, 2)

            coords = coords + delta_coords.transpose(1, 2)
            coords = torch.cat([queries.unsqueeze(1), coords[:, 1:]], dim=1)  # frame 0 stays the query
            coord_preds.append(coords * self.stride)

        vis = self._score(self.vis_predictor, track_feats)
        conf = self._score(self.conf_predictor, track_feats) if self.predict_conf else None
        return coord_preds, vis, conf
