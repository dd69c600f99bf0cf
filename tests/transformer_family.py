"""A seeded generator of small transformers that combine the features real ones are built from.

Hand-written toys only cover the patterns their author thought of; `family(n, seed)` draws `n` members from
the product of the features below, each value of each feature used about equally often (a per-feature
shuffled cycle), so a few dozen members cover every value and many pairings:

- stem: token input, conv patch embedding, or an einops patchify through a rank-6 rearrange;
- views: 1 or 2 views per sample, folded into the batch and averaged at the end (a reduction over views);
- blocks: encoder blocks, optionally followed by a decoder block (learned queries repeated over the batch
  with einops.repeat, causal self-attention, cross-attention to the encoder tokens);
- attention masks: none, bool, additive float, causal (`is_causal`), or `zeros(N, M)[:, k:] = -inf`;
- attention: `F.scaled_dot_product_attention`, or written out by hand (`q @ kᵀ * scale`, the mask added or
  filled in with `masked_fill(-inf)`, softmax, `@ v`), as timm's `fused_attn=False` and Hugging Face's eager
  attention do;
- RoPE: none, 1-D (token index) or 2-D (row/column halves), rotate-half;
- qkv split: einops.rearrange, reshape + index, chunk, or unbind;
- norms: LayerNorm, nn.RMSNorm, hand-written RMSNorm, with or without a per-head QK-norm;
- MLP: GELU (erf or tanh), SiLU, or SwiGLU;
- prefix tokens (cls + registers) concatenated by einops.repeat or .expand, sliced off before the output;
- output: tokens, mean over tokens, or tokens plus a broadcast of their mean (an `expand` into a concat).

Weights are random but seeded; dims are tiny (dim 32, 2 heads, <= 18 tokens) so that export, the passes,
lowering and an ExecuTorch run take well under a second or two per member.
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass, fields

import einops
import torch
import torch.nn.functional as F
from torch import nn

DIM, HEADS, GRID = 32, 2, (2, 3)  # tokens per view: 2 x 3 patches
PATCH = 4

CHOICES: dict[str, tuple] = {
    "stem": ("tokens", "conv", "patchify"),
    "views": (1, 2),
    "decoder": (False, True),
    "mask": ("none", "bool", "additive", "causal", "fill"),
    "rope": ("none", "1d", "2d"),
    "split": ("einops", "index", "chunk", "unbind"),
    "norm": ("layer", "rms_module", "rms_manual"),
    "qk_norm": (False, True),
    "mlp": ("gelu", "gelu_tanh", "silu", "swiglu"),
    "prefix": (0, 1, 3),
    "prefix_by": ("repeat", "expand"),
    "output": ("tokens", "mean", "concat_mean"),
    "depth": (1, 2),
    "attention": ("sdpa", "manual"),
}


@dataclass(frozen=True)
class Member:
    """One generated transformer: a value per feature in CHOICES, plus the seed of its weights."""

    seed: int
    stem: str
    views: int
    decoder: bool
    mask: str
    rope: str
    split: str
    norm: str
    qk_norm: bool
    mlp: str
    prefix: int
    prefix_by: str
    output: str
    depth: int
    attention: str

    @property
    def name(self) -> str:
        parts = [f"{k}={v}" for k, v in asdict(self).items() if k != "seed"]
        return f"m{self.seed}:" + ",".join(parts)

    def build(self) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
        """The model in eval mode (seeded weights, norm affines randomised) and an example input."""
        torch.manual_seed(self.seed)
        model = FamilyTransformer(self).eval()
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, (nn.LayerNorm, nn.RMSNorm, ManualRMSNorm)):
                    m.weight.normal_(1.0, 0.1)
                    if getattr(m, "bias", None) is not None:
                        m.bias.normal_(0.0, 0.1)
        g = torch.Generator().manual_seed(1000 + self.seed)
        gh, gw = GRID
        if self.stem == "tokens":
            shape = [2, gh * gw, 12]
        else:
            shape = [2, 3, gh * PATCH, gw * PATCH]
        if self.views > 1:
            shape.insert(1, self.views)
        return model, (torch.randn(*shape, generator=g),)


def family(n: int, seed: int = 0, choices: dict[str, tuple] | None = None) -> list[Member]:
    """`n` members; each feature's values (`choices`, default CHOICES) are dealt from a seeded shuffle,
    cycled, so all appear."""
    rng = random.Random(seed)
    columns = {}
    for name, values in (choices or CHOICES).items():
        deck: list = []
        while len(deck) < n:
            cycle = list(values)
            rng.shuffle(cycle)
            deck.extend(cycle)
        columns[name] = deck[:n]
    members = [Member(seed=seed * 10_000 + i, **{k: columns[k][i] for k in CHOICES}) for i in range(n)]
    assert [f.name for f in fields(Member)][1:] == list(CHOICES)
    return members


class ManualRMSNorm(nn.Module):
    """RMSNorm as many codebases write it (pow, mean over the last dim, rsqrt)."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def make_norm(kind: str, dim: int) -> nn.Module:
    if kind == "layer":
        return nn.LayerNorm(dim)
    if kind == "rms_module":
        return nn.RMSNorm(dim, eps=1e-6)
    return ManualRMSNorm(dim)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def rope_tables(positions: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin [N, dim] for integer positions [N] (built from arange at trace time: constants)."""
    inv_freq = 1.0 / (100.0 ** (torch.arange(0, dim, 2).float() / dim))
    angles = positions.float()[:, None] * inv_freq[None]
    angles = torch.cat((angles, angles), dim=-1)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, kind: str, prefix: int) -> torch.Tensor:
    """x [B, H, N, D]; prefix tokens get position 0, patches 1.. (1-D) or their (row, col) + 1 (2-D)."""
    n, d = x.shape[-2], x.shape[-1]
    patches = n - prefix
    gw = GRID[1] if patches % GRID[1] == 0 else 1
    idx = torch.arange(patches)
    if kind == "1d":
        pos = torch.cat((torch.zeros(prefix, dtype=torch.long), idx + 1))
        cos, sin = rope_tables(pos, d)
        return x * cos + rotate_half(x) * sin
    rows = torch.cat((torch.zeros(prefix, dtype=torch.long), idx // gw + 1))
    cols = torch.cat((torch.zeros(prefix, dtype=torch.long), idx % gw + 1))
    half = d // 2
    out = []
    for pos, part in ((rows, x[..., :half]), (cols, x[..., half:])):
        cos, sin = rope_tables(pos, half)
        out.append(part * cos + rotate_half(part) * sin)
    return torch.cat(out, dim=-1)


def attention_mask(kind: str, n: int, m: int) -> torch.Tensor | None:
    """The mask argument for SDPA (None for no mask and for `is_causal`), built in forward from constants."""
    dist = (torch.arange(n)[:, None] - torch.arange(m)[None, :]).abs()
    if kind == "bool":  # local window; key 0 always visible, so no query row is fully masked
        keep = dist <= 2
        keep[:, 0] = True
        return keep
    if kind == "additive":  # ALiBi-like distance penalty
        return -0.5 * dist.float()
    if kind == "fill":
        mask = torch.zeros(n, m)
        mask[:, max(1, m - 2) :] = float("-inf")
        return mask
    return None


def manual_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    """SDPA written out: a bool mask (True = attend) filled in with -inf, a float mask added."""
    scores = q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5
    if mask is not None and mask.dtype == torch.bool:
        scores = scores.masked_fill(~mask, float("-inf"))
    elif mask is not None:
        scores = scores + mask
    return scores.softmax(dim=-1) @ v


class Attention(nn.Module):
    def __init__(self, spec: Member, cross: bool = False) -> None:
        super().__init__()
        self.spec, self.cross = spec, cross
        self.head_dim = DIM // HEADS
        self.q = nn.Linear(DIM, DIM) if cross else None
        self.kv = nn.Linear(DIM, 2 * DIM) if cross else None
        self.qkv = None if cross else nn.Linear(DIM, 3 * DIM)
        self.q_norm = make_norm(spec.norm, self.head_dim) if spec.qk_norm else nn.Identity()
        self.k_norm = make_norm(spec.norm, self.head_dim) if spec.qk_norm else nn.Identity()
        self.proj = nn.Linear(DIM, DIM)

    def _heads(self, t: torch.Tensor, parts: int) -> list[torch.Tensor]:
        """[B, N, parts*DIM] -> `parts` tensors [B, H, N, hd], split the way `spec.split` says."""
        b, n, _ = t.shape
        how = self.spec.split
        if how == "einops":
            stacked = einops.rearrange(t, "b n (p h d) -> p b h n d", p=parts, h=HEADS)
            return [stacked[i] for i in range(parts)]
        if how == "chunk":
            return [c.reshape(b, n, HEADS, self.head_dim).transpose(1, 2) for c in t.chunk(parts, dim=-1)]
        stacked = t.reshape(b, n, parts, HEADS, self.head_dim).permute(2, 0, 3, 1, 4)
        if how == "unbind":
            return list(stacked.unbind(0))
        return [stacked[i] for i in range(parts)]

    def forward(
        self, x: torch.Tensor, memory: torch.Tensor | None = None, causal: bool = False
    ) -> torch.Tensor:
        spec = self.spec
        if self.cross:
            (q,) = self._heads(self.q(x), 1)
            k, v = self._heads(self.kv(memory), 2)
        else:
            q, k, v = self._heads(self.qkv(x), 3)
        q, k = self.q_norm(q), self.k_norm(k)
        if spec.rope != "none" and not self.cross:
            q, k = apply_rope(q, spec.rope, spec.prefix), apply_rope(k, spec.rope, spec.prefix)
        n, m = q.shape[-2], k.shape[-2]
        mask_kind = "none" if causal else spec.mask
        if mask_kind == "causal" and n != m:
            mask_kind = "fill"
        mask = attention_mask(mask_kind, n, m)
        is_causal = causal or mask_kind == "causal"
        if spec.attention == "manual":
            out = manual_attention(q, k, v, torch.ones(n, m, dtype=torch.bool).tril() if is_causal else mask)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal)
        if spec.split == "einops":
            out = einops.rearrange(out, "b h n d -> b n (h d)")
        else:
            out = out.transpose(1, 2).reshape(out.shape[0], n, DIM)
        return self.proj(out)


class Mlp(nn.Module):
    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        hidden = 2 * DIM
        self.fc1 = nn.Linear(DIM, 2 * hidden if kind == "swiglu" else hidden)
        self.fc2 = nn.Linear(hidden, DIM)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc1(x)
        if self.kind == "swiglu":
            a, b = h.chunk(2, dim=-1)
            h = F.silu(a) * b
        elif self.kind == "silu":
            h = F.silu(h)
        else:
            h = F.gelu(h, approximate="tanh" if self.kind == "gelu_tanh" else "none")
        return self.fc2(h)


class Block(nn.Module):
    """Pre-norm block; a decoder block adds causal self-attention before cross-attention to `memory`."""

    def __init__(self, spec: Member, decoder: bool = False) -> None:
        super().__init__()
        self.decoder = decoder
        self.norm1 = make_norm(spec.norm, DIM)
        self.attn = Attention(spec)
        self.norm_x = make_norm(spec.norm, DIM) if decoder else None
        self.cross = Attention(spec, cross=True) if decoder else None
        self.norm2 = make_norm(spec.norm, DIM)
        self.mlp = Mlp(spec.mlp)

    def forward(self, x: torch.Tensor, memory: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), causal=self.decoder)
        if self.cross is not None:
            x = x + self.cross(self.norm_x(x), memory)
        return x + self.mlp(self.norm2(x))


class FamilyTransformer(nn.Module):
    def __init__(self, spec: Member) -> None:
        super().__init__()
        self.spec = spec
        if spec.stem == "tokens":
            self.embed = nn.Linear(12, DIM)
        elif spec.stem == "conv":
            self.embed = nn.Conv2d(3, DIM, PATCH, PATCH)
        else:
            self.embed = nn.Linear(3 * PATCH * PATCH, DIM)
        self.prefix = nn.Parameter(torch.randn(1, spec.prefix, DIM) * 0.5) if spec.prefix else None
        self.blocks = nn.ModuleList(Block(spec) for _ in range(spec.depth))
        self.queries = nn.Parameter(torch.randn(4, DIM) * 0.5) if spec.decoder else None
        self.decoder = Block(spec, decoder=True) if spec.decoder else None
        self.norm = make_norm(spec.norm, DIM)

    def _tokens(self, x: torch.Tensor) -> torch.Tensor:
        stem = self.spec.stem
        if stem == "tokens":
            return self.embed(x)
        if stem == "conv":
            return self.embed(x).flatten(2).transpose(1, 2)
        # rank 6 on the way: b c gh p1 gw p2
        return self.embed(einops.rearrange(x, "b c (h p1) (w p2) -> b (h w) (p1 p2 c)", p1=PATCH, p2=PATCH))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spec = self.spec
        views = x.shape[1] if spec.views > 1 else 1
        if spec.views > 1:
            x = x.flatten(0, 1)
        t = self._tokens(x)
        b = t.shape[0]
        if self.prefix is not None:
            if spec.prefix_by == "repeat":
                pre = einops.repeat(self.prefix, "1 r d -> b r d", b=b)
            else:
                pre = self.prefix.expand(b, -1, -1)
            t = torch.cat((pre, t), dim=1)
        for blk in self.blocks:
            t = blk(t)
        t = t[:, spec.prefix :]
        if self.decoder is not None:
            q = einops.repeat(self.queries, "q d -> b q d", b=b)
            t = self.decoder(q, memory=t)
        t = self.norm(t)
        if spec.views > 1:  # average the views of each sample
            t = t.reshape(-1, views, *t.shape[1:]).mean(1)
        if spec.output == "mean":
            return t.mean(1)
        if spec.output == "concat_mean":
            pooled = t.mean(1, keepdim=True)
            return torch.cat((t, pooled.expand(-1, t.shape[1], -1)), dim=-1) * math.sqrt(0.5)
        return t


__all__ = ["CHOICES", "Member", "family"]
