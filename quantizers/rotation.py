"""Offline randomized Hadamard rotation of a pre-LN transformer's residual stream, folded into weights.

Why: outlier channels (a few residual channels 20-100x larger, heavy-tailed weights) make max-abs int4/int8
scales coarse for everything else. An orthogonal rotation H of the residual stream spreads each outlier over
all channels. It folds away with no op left in the program when
  * every writer into the stream (embedding, attention proj, MLP fc2, added tokens) gets H on its output side,
  * every reader is a norm -> linears pair: LayerNorm is rewritten as centre + RMSNorm. Centring is folded
    into the writers (their outputs are made mean-free; LayerNorm ignores the mean anyway), the affine
    (gamma, beta) is folded into the following linears, and RMSNorm commutes with H,
  * the readers' linears get H^T on their input side.
Value/output projections can additionally be rotated per head (attention mixes tokens, not channels).
Everything is done in float64 and written back, so fp32 outputs change only by rounding.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from .fisher import resolve_modules

ModuleRef = nn.Module | str
Writer = ModuleRef | tuple[ModuleRef, nn.Parameter]
ValueOutputPair = tuple[ModuleRef, ModuleRef, int] | tuple[ModuleRef, ModuleRef, int, int]


def _sylvester(n: int) -> torch.Tensor:
    h = torch.ones(1, 1, dtype=torch.float64)
    while h.shape[0] < n:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return h


def random_hadamard(n: int, seed: int = 0) -> torch.Tensor:
    """Orthogonal float64 [n, n]: Sylvester Hadamard times random signs, / sqrt(n). n must be a power of 2."""
    if n < 1 or n & (n - 1):
        raise ValueError(f"randomized Hadamard needs a power-of-two size, got {n}")
    generator = torch.Generator().manual_seed(seed)
    signs = torch.randint(0, 2, (n,), generator=generator, dtype=torch.float64) * 2 - 1
    return _sylvester(n) * signs / n**0.5


def _block_diag(h: torch.Tensor, repeats: int) -> torch.Tensor:
    return torch.block_diag(*([h] * repeats)) if repeats > 1 else h


def outlier_ratio(weight: torch.Tensor) -> float:
    """Mean over output rows of max|w| / rms(w): what inflates a max-abs quantization scale."""
    w = weight.detach().double()
    return float((w.abs().amax(dim=1) / w.pow(2).mean(dim=1).sqrt().clamp_min(1e-30)).mean())


@dataclass
class RotationSpec:
    """Where the residual stream (width ``dim``) is written and read; must be complete or outputs change.

    entry_writers: modules whose output enters the stream (Linear, or Conv with channels in dim 0 of weight).
    stream_parameters: tensors added or concatenated into the stream (last dim = dim): pos embeds, tokens.
    writers: linears whose output is added to the stream (attention proj, fc2), optionally with the
        LayerScale gamma applied to their output, which is folded into them and set to ones.
    norm_readers: (norm, linears fed by that norm only). A norm over k*dim (concatenated streams) is fine.
    value_output_pairs: (v linear, output linear, head_dim[, first value row]): per-head rotation of the value
        space; the optional row offset selects the value rows of a fused qkv linear (e.g. 2 * dim).
    """

    dim: int
    entry_writers: Sequence[Writer] = ()
    stream_parameters: Sequence[nn.Parameter] = ()
    writers: Sequence[Writer] = ()
    norm_readers: Sequence[tuple[nn.Module | str, Sequence[nn.Module | str]]] = ()
    value_output_pairs: Sequence[ValueOutputPair] = ()


@dataclass
class RotationReport:
    """What was folded, and the outlier ratio (max/rms per row) of quantized linears before and after."""

    stream_matrix: torch.Tensor | None = (
        None  # H @ centre: what ``StreamRotation`` applies at an unfoldable entry
    )
    norms_rewritten: list[str] = field(default_factory=list)
    rotated_inputs: list[str] = field(default_factory=list)
    rotated_outputs: list[str] = field(default_factory=list)
    outlier_ratio_before: dict[str, float] = field(default_factory=dict)
    outlier_ratio_after: dict[str, float] = field(default_factory=dict)


def _one(model: nn.Module, item: nn.Module | str) -> tuple[str, nn.Module]:
    return resolve_modules(model, [item])[0]


def _set(param: torch.Tensor, value: torch.Tensor) -> None:
    with torch.no_grad():
        param.copy_(value.to(param.dtype))


def _fold_output_side(module: nn.Module, left: torch.Tensor) -> None:
    """module's output y -> left @ y, for Linear or Conv (output channels on dim 0)."""
    weight = module.weight.detach().double()
    left = left.to(weight.device)
    flat = weight.reshape(weight.shape[0], -1)
    _set(module.weight, (left @ flat).reshape(weight.shape))
    if getattr(module, "bias", None) is not None:
        _set(module.bias, left @ module.bias.detach().double())


def _replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def fold_residual_rotation(model: nn.Module, spec: RotationSpec, *, seed: int = 0) -> RotationReport:
    """Rotate the residual stream by a randomized Hadamard, folded into weights in place.

    LayerNorms listed in ``spec.norm_readers`` are replaced by affine-free ``nn.RMSNorm`` modules.
    """
    dim = spec.dim
    h = random_hadamard(dim, seed)
    centre = torch.eye(dim, dtype=torch.float64) - 1.0 / dim
    report = RotationReport(stream_matrix=(h @ centre).float())
    readers = [
        (_one(model, norm), resolve_modules(model, list(linears))) for norm, linears in spec.norm_readers
    ]
    reader_linears = [(n, m) for _, linears in readers for n, m in linears]
    for name, module in reader_linears:
        report.outlier_ratio_before[name] = outlier_ratio(module.weight)

    for item in [*spec.entry_writers, *spec.writers]:
        module_ref, gamma = item if isinstance(item, tuple) else (item, None)
        name, module = _one(model, module_ref)
        if not hasattr(module, "weight") or module.weight.shape[0] != dim:
            raise ValueError(f"writer {name!r} must have a weight with {dim} output channels on dim 0")
        if gamma is not None:
            if gamma.shape != (dim,):
                raise ValueError(f"layer-scale gamma of {name!r} must have shape [{dim}]")
            _fold_output_side(module, torch.diag(gamma.detach().double()))
            with torch.no_grad():
                gamma.fill_(1.0)
        _fold_output_side(module, h @ centre)
        report.rotated_outputs.append(name)

    for param in spec.stream_parameters:
        if param.shape[-1] != dim:
            raise ValueError(f"stream parameter of shape {tuple(param.shape)} must end in {dim}")
        _set(param, param.detach().double() @ (h @ centre).T.to(param.device))

    for (norm_name, norm), linears in readers:
        width = _norm_width(norm_name, norm)
        if width % dim:
            raise ValueError(f"norm {norm_name!r} width {width} is not a multiple of the stream width {dim}")
        gamma = getattr(norm, "weight", None)
        beta = getattr(norm, "bias", None)
        rotation_t = _block_diag(h, width // dim).T.to(norm_device(norm, linears))
        for name, linear in linears:
            if not isinstance(linear, nn.Linear) or linear.in_features != width:
                raise ValueError(f"reader {name!r} must be an nn.Linear with {width} input features")
            weight = linear.weight.detach().double()
            bias = linear.bias.detach().double() if linear.bias is not None else None
            if beta is not None:
                shift = weight @ beta.detach().double()
                if bias is None:
                    raise ValueError(f"reader {name!r} needs a bias to absorb the LayerNorm bias")
                bias = bias + shift
            if gamma is not None:
                weight = weight * gamma.detach().double()
            _set(linear.weight, weight @ rotation_t)
            if bias is not None:
                _set(linear.bias, bias)
            report.rotated_inputs.append(name)
        eps = norm.eps if norm.eps is not None else torch.finfo(torch.float32).eps
        _replace_module(model, norm_name, nn.RMSNorm(width, eps=eps, elementwise_affine=False))
        report.norms_rewritten.append(norm_name)

    for pair in spec.value_output_pairs:
        v_ref, out_ref, head_dim, *offset = pair
        fold_value_output_rotation(
            model, v_ref, out_ref, head_dim, value_rows_start=offset[0] if offset else 0, seed=seed + 1
        )

    modules = dict(model.named_modules())
    for name in report.outlier_ratio_before:
        report.outlier_ratio_after[name] = outlier_ratio(modules[name].weight)
    return report


class StreamRotation(nn.Module):
    """Explicit ``x -> x @ M^T`` where the stream is born from something that cannot absorb the rotation.

    Example: a backbone whose last op is an affine LayerNorm. One dense [dim, dim] matmul at the entry,
    against every block linear made rotation-friendly; insert it after the entry and pass
    ``report.stream_matrix``.
    """

    def __init__(self, matrix: torch.Tensor) -> None:
        super().__init__()
        if matrix.dim() != 2 or matrix.shape[0] != matrix.shape[1]:
            raise ValueError(f"stream rotation must be a square matrix, got {tuple(matrix.shape)}")
        self.register_buffer("matrix", matrix.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.matrix.T


def norm_device(norm: nn.Module, linears: Sequence[tuple[str, nn.Module]]) -> torch.device:
    """Where the readers' weights live (rotations are built on CPU)."""
    for _, linear in linears:
        return linear.weight.device
    return torch.device("cpu")


def _norm_width(name: str, norm: nn.Module) -> int:
    if not isinstance(norm, (nn.LayerNorm, nn.RMSNorm)):
        raise ValueError(f"{name!r} is {type(norm).__name__}; only LayerNorm/RMSNorm readers fold")
    shape = norm.normalized_shape
    if len(shape) != 1:
        raise ValueError(f"norm {name!r} must normalise over the last dimension only")
    return int(shape[0])


def fold_value_output_rotation(
    model: nn.Module,
    v_linear: nn.Module | str,
    out_linear: nn.Module | str,
    head_dim: int,
    *,
    value_rows_start: int = 0,
    seed: int = 1,
) -> None:
    """Per-head Hadamard between the value projection's outputs and the attention output projection's inputs.

    Valid because attention output per head is a token-mix of that head's values (no channel mixing, no norm
    on v). ``value_rows_start`` locates the value rows inside a fused qkv linear.
    """
    v_name, v = _one(model, v_linear)
    o_name, out = _one(model, out_linear)
    if not isinstance(v, nn.Linear) or not isinstance(out, nn.Linear):
        raise ValueError(f"{v_name!r} and {o_name!r} must both be nn.Linear")
    width = out.in_features
    stop = value_rows_start + width
    if value_rows_start < 0 or stop > v.out_features or width % head_dim:
        raise ValueError(
            f"value rows [{value_rows_start}, {stop}) of {v_name!r} ({v.out_features} outputs) must split "
            f"into heads of {head_dim} feeding {o_name!r}"
        )
    rotation = _block_diag(random_hadamard(head_dim, seed), width // head_dim)
    rotation = rotation.to(v.weight.device)
    weight = v.weight.detach().double().clone()
    weight[value_rows_start:stop] = rotation @ weight[value_rows_start:stop]
    _set(v.weight, weight)
    if v.bias is not None:
        bias = v.bias.detach().double().clone()
        bias[value_rows_start:stop] = rotation @ bias[value_rows_start:stop]
        _set(v.bias, bias)
    _set(out.weight, out.weight.detach().double() @ rotation.T.to(out.weight.device))
