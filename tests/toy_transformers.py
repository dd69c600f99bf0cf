"""Small transformers that carry the graph patterns real vision transformers export with.

Each toy is a few kilobytes of weights, so export + lowering takes seconds, yet it contains the patterns
the passes in `vggt_et.passes` target: `F.scaled_dot_product_attention`, LayerNorm (block norms and a
per-head QK-norm), a 2-D rotate-half RoPE whose cos/sin tables are built from `arange` and gathered with
`F.embedding`, `einops.rearrange`, a bicubic antialiased position-embedding resize, and a float64 sin/cos
position grid. Shared with other test files (read-only for them).
"""

from __future__ import annotations

import math

import einops
import torch
import torch.nn.functional as F
from torch import nn


class Rope2D(nn.Module):
    """2-D rotate-half RoPE: first half of the head dim rotated by the row, second half by the column."""

    def __init__(self, base: float = 100.0) -> None:
        super().__init__()
        self.base = base

    def _tables(self, dim: int, length: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        inv_freq = 1.0 / (self.base ** (torch.arange(0, dim, 2).float() / dim))
        angles = torch.einsum("i,j->ij", torch.arange(length).float(), inv_freq)
        angles = torch.cat((angles, angles), dim=-1)
        return angles.cos().to(dtype), angles.sin().to(dtype)

    @staticmethod
    def _rotate_half(x: torch.Tensor) -> torch.Tensor:
        d = x.shape[-1]
        x1, x2 = x[..., : d // 2], x[..., d // 2 :]
        return torch.cat((-x2, x1), dim=-1)

    def _apply_1d(self, x: torch.Tensor, pos: torch.Tensor, length: int) -> torch.Tensor:
        cos_t, sin_t = self._tables(x.shape[-1], length, x.dtype)
        cos = F.embedding(pos, cos_t)[:, None, :, :]
        sin = F.embedding(pos, sin_t)[:, None, :, :]
        return x * cos + self._rotate_half(x) * sin

    def forward(self, x: torch.Tensor, pos: torch.Tensor, length: int) -> torch.Tensor:
        """x [B, H, N, D]; pos [B, N, 2] int64 (row, col); length: static table length."""
        d = x.shape[-1] // 2
        y_half = self._apply_1d(x[..., :d], pos[..., 0], length)
        x_half = self._apply_1d(x[..., d:], pos[..., 1], length)
        return torch.cat((y_half, x_half), dim=-1)


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, qk_norm: bool, rope: bool, use_einops: bool) -> None:
        super().__init__()
        self.heads = heads
        self.head_dim = dim // heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        self.q_norm = nn.LayerNorm(self.head_dim) if qk_norm else nn.Identity()
        self.k_norm = nn.LayerNorm(self.head_dim) if qk_norm else nn.Identity()
        self.rope = Rope2D() if rope else None
        self.use_einops = use_einops

    def forward(self, x: torch.Tensor, pos: torch.Tensor | None, grid: int) -> torch.Tensor:
        b, n, c = x.shape
        if self.use_einops:
            q, k, v = einops.rearrange(self.qkv(x), "b n (three h d) -> three b h n d", three=3, h=self.heads)
        else:
            qkv = self.qkv(x).reshape(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
            q, k, v = qkv[0], qkv[1], qkv[2]
        q, k = self.q_norm(q), self.k_norm(k)
        if self.rope is not None and pos is not None:
            q = self.rope(q, pos, grid + 1)
            k = self.rope(k, pos, grid + 1)
        out = F.scaled_dot_product_attention(q, k, v)
        if self.use_einops:
            out = einops.rearrange(out, "b h n d -> b n (h d)")
        else:
            out = out.transpose(1, 2).reshape(b, n, c)
        return self.proj(out)


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, qk_norm: bool, rope: bool, use_einops: bool) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, qk_norm, rope, use_einops)
        self.norm2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, dim * 2)
        self.fc2 = nn.Linear(dim * 2, dim)

    def forward(self, x: torch.Tensor, pos: torch.Tensor | None, grid: int) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), pos, grid)
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


def sincos_grid_embed(h: int, w: int, channels: int, dtype: torch.dtype) -> torch.Tensor:
    """[channels, h, w] sin/cos embedding of a (u, v) grid with frequencies in float64, as DPT heads do."""
    u = torch.linspace(-1.0, 1.0, w)
    v = torch.linspace(-1.0, 1.0, h)
    grid = torch.stack(torch.meshgrid(u, v, indexing="xy"), dim=-1)  # [h, w, 2]
    half = channels // 2
    omega = torch.arange(half // 2, dtype=torch.float64) / (half / 2.0)
    omega = 1.0 / 100.0**omega
    parts = []
    for i in range(2):
        p = grid[..., i].reshape(-1).to(torch.float64)
        out = torch.einsum("m,d->md", p, omega)
        parts.append(torch.cat([torch.sin(out), torch.cos(out)], dim=1))
    emb = torch.cat(parts, dim=1).to(dtype)  # [h*w, channels]
    return emb.reshape(h, w, channels).permute(2, 0, 1)


class ToyViT(nn.Module):
    """Patch embed + resized position embedding + transformer blocks (+ optional sin/cos grid head).

    forward(images [B, 3, H, W]) -> tokens [B, 1 + (H/p)*(W/p), dim] (or a [B, dim, H/p, W/p] map with
    `head=True`).
    """

    def __init__(
        self,
        dim: int = 32,
        heads: int = 2,
        depth: int = 2,
        patch: int = 4,
        pos_grid: int = 3,
        qk_norm: bool = True,
        rope: bool = True,
        use_einops: bool | str = True,
        head: bool = False,
    ) -> None:
        super().__init__()
        self.patch = patch
        self.patch_embed = nn.Conv2d(3, dim, patch, patch)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.pos_embed = nn.Parameter(torch.randn(1, 1 + pos_grid * pos_grid, dim) * 0.02)
        self.pos_grid = pos_grid
        # use_einops="mixed": even blocks split qkv with einops.rearrange, odd ones with reshape + qkv[i].
        self.blocks = nn.ModuleList(
            Block(dim, heads, qk_norm, rope, use_einops if use_einops != "mixed" else i % 2 == 0)
            for i in range(depth)
        )
        self.norm = nn.LayerNorm(dim)
        self.head = head

    def _resized_pos_embed(self, gh: int, gw: int) -> torch.Tensor:
        cls_pos, patch_pos = self.pos_embed[:, :1], self.pos_embed[:, 1:]
        dim = patch_pos.shape[-1]
        patch_pos = patch_pos.reshape(1, self.pos_grid, self.pos_grid, dim).permute(0, 3, 1, 2)
        patch_pos = F.interpolate(
            patch_pos, size=(gh, gw), mode="bicubic", antialias=True, align_corners=False
        )
        patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(1, gh * gw, dim)
        return torch.cat((cls_pos, patch_pos), dim=1)

    @staticmethod
    def _positions(b: int, gh: int, gw: int) -> torch.Tensor:
        ys, xs = torch.meshgrid(torch.arange(gh), torch.arange(gw), indexing="ij")
        pos = torch.stack((ys.reshape(-1), xs.reshape(-1)), dim=-1) + 1
        pos = torch.cat((torch.zeros(1, 2, dtype=pos.dtype), pos), dim=0)  # special token at (0, 0)
        return pos[None].expand(b, -1, -1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        b, _, h, w = images.shape
        gh, gw = h // self.patch, w // self.patch
        x = self.patch_embed(images).flatten(2).transpose(1, 2)
        x = torch.cat((self.cls_token.expand(b, -1, -1), x), dim=1)
        x = x + self._resized_pos_embed(gh, gw)
        pos = self._positions(b, gh, gw)
        for blk in self.blocks:
            x = blk(x, pos, max(gh, gw))
        x = self.norm(x)
        if not self.head:
            return x
        fmap = x[:, 1:].transpose(1, 2).reshape(b, -1, gh, gw)
        return fmap + 0.1 * sincos_grid_embed(gh, gw, fmap.shape[1], fmap.dtype)[None]


def toy_vit(seed: int = 0, **kwargs) -> ToyViT:
    """A ToyViT in eval mode with weights from `seed` (LayerNorm affines randomised so they matter)."""
    torch.manual_seed(seed)
    model = ToyViT(**kwargs).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.LayerNorm):
                m.weight.normal_(1.0, 0.1)
                m.bias.normal_(0.0, 0.1)
    return model


class SdpaVariants(nn.Module):
    """SDPA with explicit scale, a float mask, a bool mask, or is_causal: the forms the SDPA pass handles."""

    def __init__(self, mode: str, heads: int = 2, n: int = 6, d: int = 8) -> None:
        super().__init__()
        self.mode = mode
        self.heads = heads
        torch.manual_seed(1)
        self.register_buffer("float_mask", torch.randn(n, n))
        self.register_buffer("bool_mask", (torch.rand(n, n) > 0.3) | torch.eye(n, dtype=torch.bool))

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        if self.mode == "scale":
            return F.scaled_dot_product_attention(q, k, v, scale=0.3)
        if self.mode == "float_mask":
            return F.scaled_dot_product_attention(q, k, v, attn_mask=self.float_mask)
        if self.mode == "bool_mask":
            return F.scaled_dot_product_attention(q, k, v, attn_mask=self.bool_mask)
        if self.mode == "causal":
            return F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return F.scaled_dot_product_attention(q, k, v)


class HandWrittenAttention(nn.Module):
    """Attention written out (no SDPA call), in the forms real code uses: the scale on the scores (`mul`,
    `div`) or on q, a float mask added on either side, a bool mask filled in with -inf, softmax with its
    dtype spelled out, einsum products (k or v transposed); "probs_out" also returns the probabilities (they must stay whole), "mask_then_scale"
    scales the mask too (not SDPA's form, left alone)."""

    def __init__(self, mode: str = "mul") -> None:
        super().__init__()
        self.mode = mode

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor):
        mode, d = self.mode, q.shape[-1]
        if mode == "q_scaled":
            scores = (q * d**-0.5) @ k.transpose(-2, -1)
        elif mode == "div":
            scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(d)
        elif mode == "einsum":  # k as is; v given transposed
            probs = (torch.einsum("...nd,...md->...nm", q, k) * d**-0.5).softmax(-1)
            return torch.einsum("...nm,...dm->...nd", probs, v.transpose(-2, -1))
        elif mode == "einsum_kt":  # k given transposed
            scores = torch.einsum("...nd,...dm->...nm", q, k.transpose(-2, -1)) * d**-0.5
        else:
            scores = (q @ k.transpose(-2, -1)) * d**-0.5
        if mode in ("mask", "probs_out"):
            scores = scores + mask
        elif mode == "mask_left":
            scores = mask + scores
        elif mode == "fill":
            scores = scores.masked_fill(mask < -1.0, float("-inf"))
        elif mode == "mask_then_scale":
            scores = (q @ k.transpose(-2, -1) + mask) * 0.5
        probs = (
            F.softmax(scores, dim=-1, dtype=torch.float32) if mode == "softmax_dtype" else scores.softmax(-1)
        )
        out = probs @ v
        return (out, probs) if mode == "probs_out" else out


def sdpa_inputs(
    b: int = 2, heads: int = 2, n: int = 6, d: int = 8, seed: int = 0
) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(b, heads, n, d, generator=g) for _ in range(3))


def image_input(b: int = 2, h: int = 16, w: int = 16, seed: int = 0) -> tuple[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(b, 3, h, w, generator=g),)


def export_toy(model: nn.Module, args: tuple[torch.Tensor, ...]) -> torch.export.ExportedProgram:
    with torch.no_grad():
        return torch.export.export(model, args, strict=False)


__all__ = [
    "ToyViT",
    "SdpaVariants",
    "HandWrittenAttention",
    "toy_vit",
    "sdpa_inputs",
    "image_input",
    "export_toy",
]
