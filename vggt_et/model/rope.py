"""2-D rotary position embedding of the aggregator (rotate-half style, frequency base 100).

The official code sizes its cos/sin table with `int(positions.max()) + 1`, a data-dependent value
that `torch.export` cannot trace. Table rows do not depend on the table length, so we size it from
the (static) patch grid instead: results are bit-identical and the module exports. Nothing is cached
on the module, so repeated exports never leak fake tensors.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def patch_positions(batch: int, grid_h: int, grid_w: int, device: torch.device | None = None) -> torch.Tensor:
    """Integer (row, col) position of every patch, row-major: [batch, grid_h*grid_w, 2], int64."""
    rows = torch.arange(grid_h, device=device)
    cols = torch.arange(grid_w, device=device)
    grid = torch.cartesian_prod(rows, cols)
    return grid.view(1, grid_h * grid_w, 2).expand(batch, -1, -1).clone()


class RotaryPositionEmbedding2D(nn.Module):
    """Rotates the first half of each head's features by the row position, the second by the column."""

    def __init__(self, frequency: float = 100.0, scaling_factor: float = 1.0) -> None:
        super().__init__()
        self.base_frequency = frequency
        self.scaling_factor = scaling_factor  # stored like the official module; unused there too

    def frequency_tables(
        self, dim: int, length: int, device: torch.device, dtype: torch.dtype
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin tables [length, dim] for positions 0..length-1 (angles duplicated: [θ, θ])."""
        exponents = torch.arange(0, dim, 2, device=device).float() / dim
        inv_freq = 1.0 / (self.base_frequency**exponents)
        positions = torch.arange(length, device=device, dtype=inv_freq.dtype)
        angles = torch.outer(positions, inv_freq).to(dtype)
        angles = torch.cat((angles, angles), dim=-1)
        return angles.cos().to(dtype), angles.sin().to(dtype)

    @staticmethod
    def rotate_half(x: torch.Tensor) -> torch.Tensor:
        half = x.shape[-1] // 2
        return torch.cat((-x[..., half:], x[..., :half]), dim=-1)

    def _rotate_1d(
        self, x: torch.Tensor, positions: torch.Tensor, cos_table: torch.Tensor, sin_table: torch.Tensor
    ) -> torch.Tensor:
        cos = F.embedding(positions, cos_table)[:, None, :, :]
        sin = F.embedding(positions, sin_table)[:, None, :, :]
        return x * cos + self.rotate_half(x) * sin

    def forward(
        self, tokens: torch.Tensor, positions: torch.Tensor, table_length: int | None = None
    ) -> torch.Tensor:
        """tokens [B, heads, N, D]; positions [B, N, 2] int64 (row, col).

        `table_length` must exceed every position; when None it is taken from the data like the
        official code (eager only: this form does not export).
        """
        if tokens.shape[-1] % 4:
            raise ValueError(f"2-D RoPE needs a head dim divisible by 4, got {tokens.shape[-1]}")
        if table_length is None:
            table_length = int(positions.max()) + 1
        half_dim = tokens.shape[-1] // 2
        cos_table, sin_table = self.frequency_tables(half_dim, table_length, tokens.device, tokens.dtype)
        rows, cols = tokens.chunk(2, dim=-1)
        rows = self._rotate_1d(rows, positions[..., 0], cos_table, sin_table)
        cols = self._rotate_1d(cols, positions[..., 1], cos_table, sin_table)
        return torch.cat((rows, cols), dim=-1)
