"""DPT head: multi-level aggregator tokens → dense depth or point map with confidence.

Semantics follow the official head, including one non-obvious detail: its fusion blocks use
`ReLU(inplace=True)`, so a residual unit adds relu(x), not x, to its output. We reproduce that
with explicit, non-inplace ops (see `ResidualConvUnit`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vggt_et.model.activations import activate_head


def uv_grid(
    width: int, height: int, aspect_ratio: float, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """Normalised (u, v) coordinates [height, width, 2] spanning a unit-diagonal box of the image's aspect."""
    diag = (aspect_ratio**2 + 1.0) ** 0.5
    span_x, span_y = aspect_ratio / diag, 1.0 / diag
    xs = torch.linspace(
        -span_x * (width - 1) / width, span_x * (width - 1) / width, steps=width, dtype=dtype, device=device
    )
    ys = torch.linspace(
        -span_y * (height - 1) / height,
        span_y * (height - 1) / height,
        steps=height,
        dtype=dtype,
        device=device,
    )
    uu, vv = torch.meshgrid(xs, ys, indexing="xy")
    return torch.stack((uu, vv), dim=-1)


def sincos_embed_1d(dim: int, pos: torch.Tensor, omega_0: float = 100.0) -> torch.Tensor:
    """[sin(p·ω), cos(p·ω)] with ω_j = omega_0^(-j/(dim/2)), computed in float64 like the official code."""
    omega = torch.arange(dim // 2, dtype=torch.float64, device=pos.device) / (dim / 2.0)
    omega = 1.0 / omega_0**omega
    angles = pos.reshape(-1).to(torch.float64)[:, None] * omega[None, :]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1).float()


def grid_to_embed(grid: torch.Tensor, channels: int, omega_0: float = 100.0) -> torch.Tensor:
    """[H, W, 2] grid → [H, W, channels]: the first half encodes u, the second half v."""
    height, width, _ = grid.shape
    flat = grid.reshape(-1, 2)
    emb = torch.cat(
        [
            sincos_embed_1d(channels // 2, flat[:, 0], omega_0),
            sincos_embed_1d(channels // 2, flat[:, 1], omega_0),
        ],
        dim=-1,
    )
    return emb.view(height, width, channels)


def add_pos_embed(x: torch.Tensor, image_width: int, image_height: int, ratio: float = 0.1) -> torch.Tensor:
    """x + ratio · sin/cos embedding of the feature map's uv grid (depends on shapes only).

    The embedding's first half of channels depends only on the column (u), the second half only on the
    row (v), so it is added as two broadcast terms. Every element equals the official [C, H, W] table's,
    but a compiled program stores C·(H + W) numbers instead of C·H·W (about 270 MB less for VGGT-1B's
    full-resolution map, which would otherwise dominate a W4 program's size).
    """
    channels, height, width = x.shape[1:]
    half = channels // 2
    grid = uv_grid(width, height, image_width / image_height, x.dtype, x.device)
    # Built in float32 (float64 inside) like the official code; cast so a float16 model stays float16.
    emb_u = (sincos_embed_1d(half, grid[0, :, 0]) * ratio).to(x.dtype)  # [W, C/2]: columns
    emb_v = (sincos_embed_1d(half, grid[:, 0, 1]) * ratio).to(x.dtype)  # [H, C/2]: rows
    first = x[:, :half] + emb_u.t()[None, :, None, :]
    second = x[:, half:] + emb_v.t()[None, :, :, None]
    return torch.cat([first, second], dim=1)


class ResidualConvUnit(nn.Module):
    """relu → conv3×3 → relu → conv3×3, plus the skip: relu(x) in VGGT (the official in-place ReLU's effect
    on the skip), x itself in VGGT-Ω (whose ReLU is not in place): `relu_skip`."""

    def __init__(self, features: int, relu_skip: bool = True) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, kernel_size=3, stride=1, padding=1, bias=True)
        self.conv2 = nn.Conv2d(features, features, kernel_size=3, stride=1, padding=1, bias=True)
        self.relu_skip = relu_skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # One ReLU node feeds both the convs and (VGGT) the skip: a second copy of it was enough for the
        # int8-conv quantizer to leave that add with mismatched inputs, which XNNPACK refused at load.
        activated = F.relu(x)
        out = self.conv2(F.relu(self.conv1(activated)))
        return out + (activated if self.relu_skip else x)


class FeatureFusionBlock(nn.Module):
    def __init__(self, features: int, has_residual: bool = True, relu_skip: bool = True) -> None:
        super().__init__()
        self.out_conv = nn.Conv2d(features, features, kernel_size=1, stride=1, padding=0, bias=True)
        if has_residual:
            self.resConfUnit1 = ResidualConvUnit(features, relu_skip)
        self.has_residual = has_residual
        self.resConfUnit2 = ResidualConvUnit(features, relu_skip)

    def forward(
        self, x: torch.Tensor, skip: torch.Tensor | None = None, size: Sequence[int] | None = None
    ) -> torch.Tensor:
        """Fuse, resize to `size` (default: twice the input; no resize when already that size), 1×1 conv."""
        if self.has_residual:
            x = x + self.resConfUnit1(skip)
        x = self.resConfUnit2(x)
        if size is None:
            size = (x.shape[-2] * 2, x.shape[-1] * 2)
        if tuple(size) != tuple(x.shape[-2:]):
            x = F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=True)
        return self.out_conv(x)


class DPTTrunk(nn.Module):
    """What VGGT's DPT head and VGGT-Ω's dense head share: token norm, per-level projection and resize,
    the RefineNet fusion of four levels (`scratch`), and running frames in groups. Subclasses add their
    output convolutions (`_forward_frames`) and say what one frame's widest map costs."""

    def __init__(
        self,
        dim_in: int,
        patch_size: int,
        features: int,
        out_channels: Sequence[int],
        intermediate_layer_idx: Sequence[int],
        relu_skip: bool = True,
        frames_chunk_size: int | None = 8,
    ) -> None:
        super().__init__()
        self.frames_chunk_size: int | None = frames_chunk_size
        self.patch_size = patch_size
        self.intermediate_layer_idx = tuple(intermediate_layer_idx)
        self.norm = nn.LayerNorm(dim_in)
        self.projects = nn.ModuleList(
            nn.Conv2d(dim_in, oc, kernel_size=1, stride=1, padding=0) for oc in out_channels
        )
        self.resize_layers = nn.ModuleList(
            [
                nn.ConvTranspose2d(out_channels[0], out_channels[0], kernel_size=4, stride=4, padding=0),
                nn.ConvTranspose2d(out_channels[1], out_channels[1], kernel_size=2, stride=2, padding=0),
                nn.Identity(),
                nn.Conv2d(out_channels[3], out_channels[3], kernel_size=3, stride=2, padding=1),
            ]
        )
        self.scratch = nn.Module()
        for i, channels in enumerate(out_channels, start=1):
            setattr(
                self.scratch,
                f"layer{i}_rn",
                nn.Conv2d(channels, features, 3, stride=1, padding=1, bias=False),
            )
        self.scratch.refinenet1 = FeatureFusionBlock(features, relu_skip=relu_skip)
        self.scratch.refinenet2 = FeatureFusionBlock(features, relu_skip=relu_skip)
        self.scratch.refinenet3 = FeatureFusionBlock(features, relu_skip=relu_skip)
        self.scratch.refinenet4 = FeatureFusionBlock(features, has_residual=False, relu_skip=relu_skip)

    def token_levels(
        self,
        aggregated_tokens_list: Sequence[torch.Tensor | None],
        images: torch.Tensor,
        patch_start_idx: int,
        pos_embed: bool = True,
    ) -> list[torch.Tensor]:
        """The four levels' patch tokens as feature maps at 4, 2, 1 and 1/2 × the patch grid."""
        batch, frames, _, height, width = images.shape
        grid_h, grid_w = height // self.patch_size, width // self.patch_size
        levels = []
        for k, layer in enumerate(self.intermediate_layer_idx):
            x = aggregated_tokens_list[layer][:, :, patch_start_idx:]
            x = self.norm(x.reshape(batch * frames, -1, x.shape[-1]))
            x = x.permute(0, 2, 1).reshape(x.shape[0], x.shape[-1], grid_h, grid_w)
            x = self.projects[k](x)
            if pos_embed:
                x = add_pos_embed(x, width, height)
            levels.append(self.resize_layers[k](x))
        return levels

    def forward(
        self,
        aggregated_tokens_list: Sequence[torch.Tensor | None],
        images: torch.Tensor,
        patch_start_idx: int,
    ) -> Any:
        """The subclass's outputs ([B, S, ...] tensors), frames run in groups of `frames_chunk_size` (None:
        all at once), like the official heads' chunks of 8: every frame is computed on its own, so the results
        are identical, and the full-resolution maps of only one group are alive at a time."""
        frames = images.shape[1]
        group = self.frames_chunk_size or frames
        if group >= frames:
            return self._forward_frames(aggregated_tokens_list, images, patch_start_idx)
        parts = [
            self._forward_frames(
                [t if t is None else t[:, start : start + group] for t in aggregated_tokens_list],
                images[:, start : start + group],
                patch_start_idx,
            )
            for start in range(0, frames, group)
        ]
        if isinstance(parts[0], torch.Tensor):
            return torch.cat(parts, dim=1)
        return tuple(torch.cat(outputs, dim=1) for outputs in zip(*parts, strict=True))

    def _forward_frames(
        self,
        aggregated_tokens_list: Sequence[torch.Tensor | None],
        images: torch.Tensor,
        patch_start_idx: int,
    ) -> Any:
        raise NotImplementedError

    def full_resolution_bytes(self, height: int, width: int, itemsize: int = 4) -> int:
        """Bytes of one frame's widest map (what a frame group costs per frame)."""
        raise NotImplementedError

    def fuse_levels(self, levels: list[torch.Tensor], last_size: Sequence[int] | None = None) -> torch.Tensor:
        """RefineNet from the coarsest level up; the last fusion resizes to `last_size` (default ×2)."""
        s = self.scratch
        l1, l2, l3, l4 = (getattr(s, f"layer{i}_rn")(x) for i, x in enumerate(levels, start=1))
        out = s.refinenet4(l4, size=l3.shape[2:])
        out = s.refinenet3(out, l3, size=l2.shape[2:])
        out = s.refinenet2(out, l2, size=l1.shape[2:])
        return s.refinenet1(out, l1, size=last_size)


class DPTHead(DPTTrunk):
    def __init__(
        self,
        dim_in: int,
        patch_size: int = 14,
        output_dim: int = 4,
        activation: str = "inv_log",
        conf_activation: str = "expp1",
        features: int = 256,
        out_channels: Sequence[int] = (256, 512, 1024, 1024),
        intermediate_layer_idx: Sequence[int] = (4, 11, 17, 23),
        pos_embed: bool = True,
        feature_only: bool = False,
        down_ratio: int = 1,
        frames_chunk_size: int | None = 8,
    ) -> None:
        super().__init__(
            dim_in,
            patch_size,
            features,
            out_channels,
            intermediate_layer_idx,
            frames_chunk_size=frames_chunk_size,
        )
        self.activation = activation
        self.conf_activation = conf_activation
        self.pos_embed = pos_embed
        self.feature_only = feature_only
        self.down_ratio = down_ratio
        if feature_only:
            self.scratch.output_conv1 = nn.Conv2d(features, features, kernel_size=3, stride=1, padding=1)
        else:
            self.scratch.output_conv1 = nn.Conv2d(features, features // 2, kernel_size=3, stride=1, padding=1)
            self.scratch.output_conv2 = nn.Sequential(
                nn.Conv2d(features // 2, 32, kernel_size=3, stride=1, padding=1),
                nn.ReLU(),
                nn.Conv2d(32, output_dim, kernel_size=1, stride=1, padding=0),
            )

    def fuse(self, levels: list[torch.Tensor]) -> torch.Tensor:
        return self.scratch.output_conv1(self.fuse_levels(levels))

    def full_resolution_bytes(self, height: int, width: int, itemsize: int = 4) -> int:
        """Bytes of one frame's widest full-resolution feature map (what a frame group costs per frame)."""
        return self.scratch.refinenet1.out_conv.out_channels * height * width * itemsize

    def _forward_frames(
        self,
        aggregated_tokens_list: Sequence[torch.Tensor | None],
        images: torch.Tensor,
        patch_start_idx: int,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """(values [B, S, H, W, C], conf [B, S, H, W]), or features [B, S, C', H/r, W/r] if feature_only."""
        batch, frames, _, height, width = images.shape
        grid_h, grid_w = height // self.patch_size, width // self.patch_size
        out = self.fuse(self.token_levels(aggregated_tokens_list, images, patch_start_idx, self.pos_embed))
        size = (
            int(grid_h * self.patch_size / self.down_ratio),
            int(grid_w * self.patch_size / self.down_ratio),
        )
        out = F.interpolate(out, size=size, mode="bilinear", align_corners=True)
        if self.pos_embed:
            out = add_pos_embed(out, width, height)
        if self.feature_only:
            return out.view(batch, frames, *out.shape[1:])
        values, conf = activate_head(self.scratch.output_conv2(out), self.activation, self.conf_activation)
        return values.view(batch, frames, *values.shape[1:]), conf.view(batch, frames, *conf.shape[1:])
