"""Symmetric integer fake-quantization of linear weights, matching the lowering path's arithmetic.

Why a separate fake-quant: the transforms in this package (clipping, rotation, mixed precision) are chosen by
measuring quantization error in plain torch before export. The arithmetic mirrors torchao's symmetric
per-group/per-channel mapping (``scale = max|w| / ((qmax - qmin) / 2)``, i.e. ``amax / 7.5`` for int4, values
clamped to ``[-8, 7]``) so that a weight pre-clamped here quantizes to the same grid in the exported program.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

_SCALE_EPS = torch.finfo(torch.float32).eps  # torchao choose_qparams_affine's default floor


def _qrange(bits: int) -> tuple[int, int]:
    if bits not in (2, 3, 4, 8):
        raise ValueError(f"bits must be one of 2, 3, 4, 8; got {bits}")
    return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1


def _grouped(weight: torch.Tensor, group_size: int | None) -> torch.Tensor:
    """View a [out, in] weight as [out, n_groups, group]; group_size None means one group per row."""
    if weight.dim() != 2:
        raise ValueError(f"expected a 2-D weight [out, in], got shape {tuple(weight.shape)}")
    out_features, in_features = weight.shape
    size = in_features if group_size is None else group_size
    if size <= 0 or in_features % size != 0:
        raise ValueError(f"group_size {group_size} must be positive and divide in_features {in_features}")
    return weight.reshape(out_features, in_features // size, size)


def _ratios_for(weight: torch.Tensor, clip_ratio: float | torch.Tensor | None) -> torch.Tensor:
    if clip_ratio is None:
        return torch.ones(weight.shape[0], 1, 1, dtype=weight.dtype, device=weight.device)
    ratio = torch.as_tensor(clip_ratio, dtype=weight.dtype, device=weight.device)
    if ratio.dim() == 0:
        ratio = ratio.expand(weight.shape[0])
    if ratio.shape != (weight.shape[0],):
        raise ValueError(f"clip_ratio must be scalar or [{weight.shape[0]}], got {tuple(ratio.shape)}")
    if bool((ratio <= 0).any()) or bool((ratio > 1).any()):
        raise ValueError("clip ratios must lie in (0, 1]")
    return ratio.reshape(-1, 1, 1)


def quantization_scales(
    weight: torch.Tensor,
    bits: int = 4,
    group_size: int | None = None,
    clip_ratio: float | torch.Tensor | None = None,
) -> torch.Tensor:
    """Symmetric scales [out, n_groups]; ``clip_ratio`` (scalar or per row) shrinks each group's range."""
    qmin, qmax = _qrange(bits)
    groups = _grouped(weight, group_size)
    amax = groups.abs().amax(dim=-1, keepdim=True) * _ratios_for(weight, clip_ratio)
    scales = (amax / ((qmax - qmin) / 2)).clamp_min(_SCALE_EPS)
    return scales.squeeze(-1)


def fake_quantize_weight(
    weight: torch.Tensor,
    bits: int = 4,
    group_size: int | None = None,
    clip_ratio: float | torch.Tensor | None = None,
) -> torch.Tensor:
    """Round-to-nearest symmetric quantize-dequantize of a [out, in] weight (per channel or per group).

    With ``clip_ratio`` the weight is pre-clamped first (``pre_clip_weight``), exactly what the export path
    sees, so a measured clipped error is the error the exported program will have.
    """
    qmin, qmax = _qrange(bits)
    if clip_ratio is not None:
        weight = pre_clip_weight(weight, clip_ratio, group_size)
    groups = _grouped(weight, group_size)
    scales = quantization_scales(weight, bits, group_size).unsqueeze(-1)
    q = torch.clamp(torch.round(groups * (1.0 / scales)), qmin, qmax)  # torchao's order: ties at -7.5 agree
    return (q * scales).reshape(weight.shape).to(weight.dtype)


def pre_clip_weight(
    weight: torch.Tensor, clip_ratio: float | torch.Tensor, group_size: int | None = None
) -> torch.Tensor:
    """Clamp each group to ``clip_ratio * max|w|`` so plain max-abs quantization then uses the clipped scale.

    This is how a searched clip ratio reaches the exported program: the lowering quantizes the clamped float
    weight with its ordinary scale rule and lands exactly on the grid chosen here.
    """
    groups = _grouped(weight, group_size)
    limit = groups.abs().amax(dim=-1, keepdim=True) * _ratios_for(weight, clip_ratio)
    return torch.maximum(torch.minimum(groups, limit), -limit).reshape(weight.shape)


def fake_quantize_activation_per_token(x: torch.Tensor, bits: int = 8) -> torch.Tensor:
    """Dynamic symmetric per-token activation fake-quant (the '8da' half of 8da4w), for measuring only."""
    qmin, qmax = _qrange(bits)
    scale = (x.abs().amax(dim=-1, keepdim=True) / ((qmax - qmin) / 2)).clamp_min(_SCALE_EPS)
    return torch.clamp(torch.round(x * (1.0 / scale)), qmin, qmax) * scale


def weight_storage_bytes(
    out_features: int, in_features: int, bits: int, group_size: int | None, scale_bytes: int = 4
) -> int:
    """Packed weight bytes plus one scale per group (symmetric: no zero points; bias stays float)."""
    n_groups = 1 if group_size is None or bits == 8 else in_features // group_size
    return (out_features * in_features * bits + 7) // 8 + out_features * n_groups * scale_bytes


@dataclass
class FakeQuantReport:
    """What ``fake_quantize_linears`` changed: bits per layer and the packed size the lowering would store."""

    bits: dict[str, int] = field(default_factory=dict)
    size_bytes: dict[str, int] = field(default_factory=dict)

    @property
    def total_bytes(self) -> int:
        return sum(self.size_bytes.values())


def fake_quantize_linears(
    model: nn.Module,
    plan: Mapping[str, int],
    group_size: int | None = None,
    *,
    scale_bytes: int = 4,
) -> FakeQuantReport:
    """Replace the weights of the named linears by their quantize-dequantize values, in place.

    ``plan`` maps module names to bits (4 or 8; 8-bit layers are per channel, as 8da8w would be). Layers not
    in the plan are left in float. Only for measuring: the export path quantizes the float weights itself.
    """
    modules = dict(model.named_modules())
    report = FakeQuantReport()
    for name, bits in plan.items():
        module = modules.get(name)
        if not isinstance(module, nn.Linear):
            raise ValueError(f"plan names {name!r}, which is not an nn.Linear of the model")
        layer_group = None if bits == 8 else group_size
        with torch.no_grad():
            module.weight.copy_(fake_quantize_weight(module.weight, bits, layer_group))
        report.bits[name] = bits
        report.size_bytes[name] = weight_storage_bytes(
            module.out_features, module.in_features, bits, layer_group, scale_bytes
        )
    return report


class ActivationFakeQuant(nn.Module):
    """Wraps a linear so its input is per-token fake-quantized; emulates 8da4w in measurements."""

    def __init__(self, linear: nn.Linear, bits: int = 8) -> None:
        super().__init__()
        self.linear = linear
        self.bits = bits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(fake_quantize_activation_per_token(x, self.bits))


def wrap_activation_fake_quant(model: nn.Module, names: list[str], bits: int = 8) -> None:
    """Wrap the named linears in ``ActivationFakeQuant`` in place (measurement only)."""
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        linear = getattr(parent, child)
        if not isinstance(linear, nn.Linear):
            raise ValueError(f"{name!r} is not an nn.Linear")
        setattr(parent, child, ActivationFakeQuant(linear, bits))
