"""Building blocks of the track head's iterative tracker (CoTracker / VGGSfM lineage).

Point sampling, the two sin-cos embeddings, the correlation pyramid and the attention blocks of the
update transformer. Numerics follow the official `vggt/heads/track_modules/` exactly, including its
quirks (noted where they occur), so a checkpoint reproduces the official tracks.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from vggt_et.model.layers import Mlp


def bilinear_sample(values: torch.Tensor, points: torch.Tensor, padding_mode: str = "border") -> torch.Tensor:
    """Bilinearly sample `values` [B,C,H,W] at pixel coordinates `points` [B,Ho,Wo,2] given as (x, y).

    Pixel convention is align_corners=True: x=0 is the centre of the first column, x=W-1 the centre of
    the last. Returns [B,C,Ho,Wo]. Like the official sampler the coordinates carry no gradient.
    """
    height, width = values.shape[-2:]
    # Same float32 rounding as the official sampler: a per-axis scale tensor, multiply, subtract 1.
    scale = torch.tensor(
        [2 / max(width - 1, 1), 2 / max(height - 1, 1)], device=values.device, dtype=values.dtype
    )
    grid = points.detach().to(device=values.device, dtype=values.dtype) * scale - 1
    return F.grid_sample(values, grid, mode="bilinear", padding_mode=padding_mode, align_corners=True)


def sample_features_at_points(feature_map: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Features of `feature_map` [B,C,H,W] at pixel points [B,N,2] (x, y), border-clamped -> [B,N,C]."""
    sampled = bilinear_sample(feature_map, points.unsqueeze(2))  # [B, C, N, 1]
    return sampled.squeeze(3).transpose(1, 2)


def sincos_embedding_1d(channels: int, positions: torch.Tensor) -> torch.Tensor:
    """Transformer sin-cos code of `positions` (any shape) -> [..., channels]: all sines, then all cosines.

    Frequencies 10000^(-k / (channels/2)); the table is computed in float64 and cast back to the dtype of
    `positions`, as the official code does (it matters for large positions times high frequencies).
    """
    if channels % 2:
        raise ValueError(f"sin-cos embedding needs an even channel count, got {channels}")
    exponents = torch.arange(channels // 2, dtype=torch.float64, device=positions.device) / (channels / 2.0)
    frequencies = 1.0 / 10000**exponents
    angles = positions.to(torch.float64).unsqueeze(-1) * frequencies
    return torch.cat([angles.sin(), angles.cos()], dim=-1).to(positions.dtype)


def sincos_pos_embed_2d(
    channels: int, height: int, width: int, device: torch.device | None = None
) -> torch.Tensor:
    """Fixed 2-D position code of a height x width grid -> [1, channels, height, width].

    The first half of the channels encodes the column (x), the second half the row (y).
    """
    if channels % 2:
        raise ValueError(f"2-D sin-cos embedding needs an even channel count, got {channels}")
    rows = torch.arange(height, dtype=torch.float32, device=device)
    cols = torch.arange(width, dtype=torch.float32, device=device)
    grid_y, grid_x = torch.meshgrid(rows, cols, indexing="ij")  # each [H, W]
    embedding = torch.cat(
        [sincos_embedding_1d(channels // 2, grid_x), sincos_embedding_1d(channels // 2, grid_y)], dim=-1
    )
    return embedding.permute(2, 0, 1).unsqueeze(0)


def flow_embedding_2d(xy: torch.Tensor, channels: int) -> torch.Tensor:
    """Sin-cos code of 2-D displacements [..., 2] -> float32 [..., 2*channels] (x block, then y block).

    Unlike `sincos_embedding_1d` the sines and cosines are interleaved (sin, cos, sin, cos, ...) and the
    frequencies grow linearly, k * 1000/channels for k = 0, 2, 4, ... (official `get_2d_embedding`).
    As there, the frequencies and the result are float32 whatever the dtype of `xy` (the angles take
    the promoted dtype), so float64 or reduced-precision runs round the same way.
    """
    if channels % 2:
        raise ValueError(f"flow embedding needs an even channel count, got {channels}")
    frequencies = torch.arange(0, channels, 2, device=xy.device, dtype=torch.float32) * (1000.0 / channels)

    def interleaved(coordinate: torch.Tensor) -> torch.Tensor:
        angles = coordinate * frequencies
        return torch.stack([angles.sin(), angles.cos()], dim=-1).flatten(-2).to(torch.float32)

    return torch.cat([interleaved(xy[..., 0:1]), interleaved(xy[..., 1:2])], dim=-1)


class CorrelationPyramid:
    """Feature pyramid of all frames, queried with per-track features around per-track positions.

    Level 0 is the feature map itself, each further level a 2x2 average pool of the previous one.
    `sample` correlates each track feature with a whole level (dot product / sqrt(C)) and reads the
    correlation in a (2r+1)^2 window around the track's position at that level (zeros outside).
    A plain object rebuilt every forward (like the official `CorrBlock`), so nothing is cached.
    """

    def __init__(self, fmaps: torch.Tensor, num_levels: int, radius: int) -> None:
        batch, frames = fmaps.shape[:2]
        self.radius = radius
        self.levels = [fmaps]
        for _ in range(num_levels - 1):
            pooled = F.avg_pool2d(self.levels[-1].flatten(0, 1), kernel_size=2, stride=2)
            self.levels.append(pooled.unflatten(0, (batch, frames)))
        steps = torch.linspace(-radius, radius, 2 * radius + 1, device=fmaps.device, dtype=fmaps.dtype)
        # Official quirk: the window's *first* index is the x offset, the second the y offset, so the
        # flattened window is x-major (transposed with respect to the usual row-major image layout).
        offset_x, offset_y = torch.meshgrid(steps, steps, indexing="ij")
        self.window = torch.stack([offset_x, offset_y], dim=-1)  # [2r+1, 2r+1, 2]

    def sample(self, track_feats: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
        """track_feats [B,S,N,C], coords [B,S,N,2] (level-0 pixels) -> [B,S,N,levels*(2r+1)^2]."""
        batch, frames, tracks, channels = track_feats.shape
        side = 2 * self.radius + 1
        window = self.window.to(device=coords.device, dtype=coords.dtype).view(1, side, side, 2)
        sampled_levels = []
        for level, fmaps in enumerate(self.levels):
            height, width = fmaps.shape[-2:]
            corr = torch.matmul(track_feats, fmaps.flatten(3)) / math.sqrt(channels)  # [B,S,N,H*W]
            corr = corr.reshape(batch * frames * tracks, 1, height, width)
            centres = coords.reshape(batch * frames * tracks, 1, 1, 2) / (2**level)
            windowed = bilinear_sample(corr, centres + window, padding_mode="zeros")
            sampled_levels.append(windowed.view(batch, frames, tracks, side * side))
        return torch.cat(sampled_levels, dim=-1)


class AttnBlock(nn.Module):
    """Pre-norm self-attention + MLP block over `nn.MultiheadAttention`.

    Official quirk kept on purpose: `x` is *replaced* by norm1(x) before the residual, so both residual
    additions start from the normalized tokens, not from the block input.
    """

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden_size)
        self.norm2 = nn.LayerNorm(hidden_size)
        self.attn = nn.MultiheadAttention(embed_dim=hidden_size, num_heads=num_heads, batch_first=True)
        self.mlp = Mlp(in_features=hidden_size, hidden_features=int(hidden_size * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x)
        attended, _ = self.attn(x, x, x)
        x = x + attended
        return x + self.mlp(self.norm2(x))


class CrossAttnBlock(nn.Module):
    """Pre-norm cross-attention (queries `x`, keys/values `context`) + MLP block.

    Same quirk as `AttnBlock`: the residual stream starts from norm1(x).
    """

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden_size)
        self.norm_context = nn.LayerNorm(hidden_size)
        self.norm2 = nn.LayerNorm(hidden_size)
        self.cross_attn = nn.MultiheadAttention(embed_dim=hidden_size, num_heads=num_heads, batch_first=True)
        self.mlp = Mlp(in_features=hidden_size, hidden_features=int(hidden_size * mlp_ratio))

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x)
        context = self.norm_context(context)
        attended, _ = self.cross_attn(x, context, context)
        x = x + attended
        return x + self.mlp(self.norm2(x))


class EfficientUpdateFormer(nn.Module):
    """Transformer that turns per-track, per-frame tokens [B,N,S,Din] into updates [B,N,S,Dout].

    Alternates attention over time (the S frames of one track) with attention over space routed through
    `num_virtual_tracks` learned tokens (virtual <- points, virtual <-> virtual, points <- virtual), which
    keeps the space step linear in the number of tracks.
    """

    def __init__(
        self,
        input_dim: int,
        hidden_size: int = 384,
        output_dim: int = 130,
        depth: int = 6,
        num_heads: int = 8,
        mlp_ratio: float = 4.0,
        num_virtual_tracks: int = 64,
        add_space_attn: bool = True,
    ) -> None:
        super().__init__()
        self.num_virtual_tracks = num_virtual_tracks
        self.add_space_attn = add_space_attn
        # Registration order matters only for state_dict order; it mirrors the official module.
        self.input_norm = nn.LayerNorm(input_dim)
        self.input_transform = nn.Linear(input_dim, hidden_size)
        self.output_norm = nn.LayerNorm(hidden_size)
        self.flow_head = nn.Linear(hidden_size, output_dim)
        # "virual" (sic) is the official checkpoint's spelling.
        self.virual_tracks = (
            nn.Parameter(torch.randn(1, num_virtual_tracks, 1, hidden_size)) if add_space_attn else None
        )
        self.time_blocks = nn.ModuleList(AttnBlock(hidden_size, num_heads, mlp_ratio) for _ in range(depth))
        if add_space_attn:
            self.space_virtual_blocks = nn.ModuleList(
                AttnBlock(hidden_size, num_heads, mlp_ratio) for _ in range(depth)
            )
            self.space_point2virtual_blocks = nn.ModuleList(
                CrossAttnBlock(hidden_size, num_heads, mlp_ratio) for _ in range(depth)
            )
            self.space_virtual2point_blocks = nn.ModuleList(
                CrossAttnBlock(hidden_size, num_heads, mlp_ratio) for _ in range(depth)
            )
        self._init_weights()

    def _init_weights(self) -> None:
        """Official initialization: Xavier-uniform linears with zero bias, a near-zero flow head."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        nn.init.trunc_normal_(self.flow_head.weight, std=0.001)

    def _space_step(self, tokens: torch.Tensor, block: int) -> torch.Tensor:
        """One round of space attention on tokens [B,N+V,S,C] (real tracks first, virtual tracks last)."""
        batch, all_tracks, frames, channels = tokens.shape
        per_frame = tokens.permute(0, 2, 1, 3).reshape(batch * frames, all_tracks, channels)
        points = per_frame[:, : all_tracks - self.num_virtual_tracks]
        virtual = per_frame[:, all_tracks - self.num_virtual_tracks :]
        virtual = self.space_virtual2point_blocks[block](virtual, points)
        virtual = self.space_virtual_blocks[block](virtual)
        points = self.space_point2virtual_blocks[block](points, virtual)
        per_frame = torch.cat([points, virtual], dim=1)
        return per_frame.view(batch, frames, all_tracks, channels).permute(0, 2, 1, 3)

    def forward(self, tokens_in: torch.Tensor) -> torch.Tensor:
        tokens = self.input_transform(self.input_norm(tokens_in))
        init_tokens = tokens
        batch, tracks, frames, channels = tokens.shape
        if self.add_space_attn:
            tokens = torch.cat([tokens, self.virual_tracks.repeat(batch, 1, frames, 1)], dim=1)
        all_tracks = tokens.shape[1]
        for index, time_block in enumerate(self.time_blocks):
            per_track = time_block(tokens.reshape(batch * all_tracks, frames, channels))
            tokens = per_track.view(batch, all_tracks, frames, channels)
            if self.add_space_attn:
                tokens = self._space_step(tokens, index)
        tokens = tokens[:, :tracks] + init_tokens
        return self.flow_head(self.output_norm(tokens))
