"""Camera head: iterative refinement of the 9-value pose encoding from the last layer's camera tokens."""

from __future__ import annotations

import torch
from torch import nn

from vggt_et.model.activations import activate_pose
from vggt_et.model.layers import Block, Mlp

POSE_ENCODING_SIZE = 9  # [tx, ty, tz, qx, qy, qz, qw, fov_h, fov_w]


class CameraHead(nn.Module):
    def __init__(
        self,
        dim_in: int,
        trunk_depth: int = 4,
        num_heads: int = 16,
        mlp_ratio: float = 4.0,
        num_iterations: int = 4,
    ) -> None:
        super().__init__()
        self.num_iterations = num_iterations
        self.trunk = nn.Sequential(
            *(Block(dim_in, num_heads, mlp_ratio, init_values=0.01) for _ in range(trunk_depth))
        )
        self.token_norm = nn.LayerNorm(dim_in)
        self.trunk_norm = nn.LayerNorm(dim_in)
        self.empty_pose_tokens = nn.Parameter(torch.zeros(1, 1, POSE_ENCODING_SIZE))
        self.embed_pose = nn.Linear(POSE_ENCODING_SIZE, dim_in)
        self.poseLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim_in, 3 * dim_in, bias=True))
        self.adaln_norm = nn.LayerNorm(dim_in, elementwise_affine=False, eps=1e-6)
        self.pose_branch = Mlp(dim_in, dim_in // 2, POSE_ENCODING_SIZE)

    def forward(self, aggregated_tokens_list: list[torch.Tensor]) -> list[torch.Tensor]:
        """Activated pose encodings [B, S, 9], one per refinement iteration (the last is the answer)."""
        tokens = self.token_norm(aggregated_tokens_list[-1][:, :, 0])
        batch, frames, _ = tokens.shape
        normed = self.adaln_norm(tokens)
        pred = None
        preds = []
        for _ in range(self.num_iterations):
            if pred is None:
                conditioning = self.embed_pose(self.empty_pose_tokens.expand(batch, frames, -1))
            else:
                conditioning = self.embed_pose(pred.detach())
            shift, scale, gate = self.poseLN_modulation(conditioning).chunk(3, dim=-1)
            modulated = gate * (normed * (1 + scale) + shift) + tokens
            delta = self.pose_branch(self.trunk_norm(self.trunk(modulated)))
            pred = delta if pred is None else pred + delta
            preds.append(activate_pose(pred))
        return preds
