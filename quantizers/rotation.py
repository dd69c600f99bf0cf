"""Offline randomized Hadamard rotation of a pre-LN transformer's residual stream, folded into weights.

Why: outlier channels (a few residual channels 20-100x larger, heavy-tailed weights) make max-abs int4/int8
scales coarse for everything else. An orthogonal rotation H of the residual stream spreads each outlier over
all channels. It folds away with no op left in the program when
  * every writer into the stream (embedding, attention proj, MLP fc2, added tokens) gets H on its output side,
  * every reader is a norm -> linears pair: LayerNorm is rewritten as centre + RMSNorm. Centring is folded
    into the writers (their outputs are made mean-free; LayerNorm ignores the mean anyway), the affine
    (gamma, beta) is folded into the following linears, and RMSNorm commutes with H. Where the mean must
    survive (norms over concatenated streams, exits), ``fold_centring=False`` keeps it in one rotated
    coordinate and ``RotatedLayerNorm`` centres there instead,
  * the readers' linears get H^T on their input side.
Value/output projections can additionally be rotated per head (attention mixes tokens, not channels).
Everything is done in float64 and written back, so fp32 outputs change only by rounding.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
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


def random_hadamard(n: int, seed: int = 0, *, mean_to_first: bool = False) -> torch.Tensor:
    """Orthogonal float64 [n, n] randomized Sylvester Hadamard / sqrt(n). n must be a power of 2.

    Default: H @ diag(random signs). ``mean_to_first``: diag(signs, first +1) @ H @ random column permutation,
    which maps the all-ones vector to sqrt(n) * e_0, so a vector's mean lands in coordinate 0 alone.
    """
    if n < 1 or n & (n - 1):
        raise ValueError(f"randomized Hadamard needs a power-of-two size, got {n}")
    generator = torch.Generator().manual_seed(seed)
    signs = torch.randint(0, 2, (n,), generator=generator, dtype=torch.float64) * 2 - 1
    base = _sylvester(n) / n**0.5
    if not mean_to_first:
        return base * signs
    signs[0] = 1.0
    permutation = torch.randperm(n, generator=generator)
    return signs[:, None] * base[:, permutation]


def _block_diag(h: torch.Tensor, repeats: int) -> torch.Tensor:
    return torch.block_diag(*([h] * repeats)) if repeats > 1 else h


def outlier_ratio(weight: torch.Tensor) -> float:
    """Mean over output rows of max|w| / rms(w): what inflates a max-abs quantization scale."""
    w = weight.detach().double().reshape(weight.shape[0], -1)
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
    fold_centring: True folds LayerNorm's centring into the writers (stream made mean-free; nothing added
        to the program). Exact only if every consumer ignores the stream's mean: norms over one stream.
        False keeps the mean (in rotated coordinate 0) and rewrites norms as ``RotatedLayerNorm`` (one
        cheap elementwise correction before RMSNorm); needed when a norm spans concatenated different
        streams (VGGT heads: [frame, global]) or the stream leaves through ``exit_rotation``.
    """

    dim: int
    entry_writers: Sequence[Writer] = ()
    stream_parameters: Sequence[nn.Parameter] = ()
    writers: Sequence[Writer] = ()
    norm_readers: Sequence[tuple[nn.Module | str, Sequence[nn.Module | str]]] = ()
    value_output_pairs: Sequence[ValueOutputPair] = ()
    fold_centring: bool = True


@dataclass
class RotationReport:
    """What was folded, and the outlier ratio (max/rms per row) of quantized linears before and after."""

    # H @ centre: what ``StreamRotation`` applies at an unfoldable entry; H alone: see ``exit_rotation``.
    stream_matrix: torch.Tensor | None = None
    hadamard: torch.Tensor | None = None
    norms_rewritten: list[str] = field(default_factory=list)
    rotated_inputs: list[str] = field(default_factory=list)
    rotated_outputs: list[str] = field(default_factory=list)
    outlier_ratio_before: dict[str, float] = field(default_factory=dict)
    outlier_ratio_after: dict[str, float] = field(default_factory=dict)

    def exit_rotation(self, repeats: int = 1) -> StreamRotation:
        """Explicit H^T (block-diagonal over ``repeats`` concatenated streams) where the stream leaves into
        something that cannot absorb it (e.g. a head whose normed input becomes a new residual stream).
        It gives back the original stream exactly with ``fold_centring=False``, its mean-free version
        (fine for a LayerNorm over that one stream) with ``fold_centring=True``."""
        if self.hadamard is None:
            raise ValueError("this report carries no rotation")
        return StreamRotation(_block_diag(self.hadamard.double(), repeats).T.float())


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


def _reader_width(module: nn.Module) -> int | None:
    if isinstance(module, nn.Linear):
        return module.in_features
    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)) and module.groups == 1:
        # Zero padding would see 0 instead of the folded LayerNorm bias at borders: unpadded convs only.
        padding = module.padding if isinstance(module.padding, tuple) else (module.padding,)
        return module.in_channels if all(p == 0 for p in padding) else None
    return None


def _validate(model: nn.Module, spec: RotationSpec) -> tuple[list, list]:
    """Check the whole spec before touching a weight, so a bad spec leaves the model as it was."""
    dim = spec.dim
    random_hadamard(dim)  # size check
    writers = []
    for item in [*spec.entry_writers, *spec.writers]:
        module_ref, gamma = item if isinstance(item, tuple) else (item, None)
        name, module = _one(model, module_ref)
        if not isinstance(getattr(module, "weight", None), torch.Tensor) or module.weight.shape[0] != dim:
            raise ValueError(f"writer {name!r} must have a weight with {dim} output channels on dim 0")
        if gamma is not None and gamma.shape != (dim,):
            raise ValueError(f"layer-scale gamma of {name!r} must have shape [{dim}]")
        writers.append((name, module, gamma))
    for param in spec.stream_parameters:
        if param.shape[-1] != dim:
            raise ValueError(f"stream parameter of shape {tuple(param.shape)} must end in {dim}")
    readers = []
    for norm_ref, linear_refs in spec.norm_readers:
        norm_name, norm = _one(model, norm_ref)
        width = _norm_width(norm_name, norm)
        if width % dim:
            raise ValueError(f"norm {norm_name!r} width {width} is not a multiple of the stream width {dim}")
        linears = resolve_modules(model, list(linear_refs))
        for name, linear in linears:
            if _reader_width(linear) != width:
                raise ValueError(
                    f"reader {name!r} must be an nn.Linear (or ungrouped, unpadded Conv) with {width} inputs"
                )
            if getattr(norm, "bias", None) is not None and linear.bias is None:
                raise ValueError(
                    f"reader {name!r} needs a bias to absorb the LayerNorm bias of {norm_name!r}"
                )
        readers.append(((norm_name, norm, width), linears))
    return writers, readers


def _fold_input_side(
    module: nn.Module, gamma: torch.Tensor | None, beta: torch.Tensor | None, right: torch.Tensor
) -> None:
    """Absorb the norm affine (gamma * n + beta) into a reader, then rotate its inputs by ``right``."""
    weight = module.weight.detach().double()
    if beta is not None:
        # The bias a constant input beta produces: sum over input channels (and kernel taps, for convs).
        shift = weight * beta.detach().double().to(weight.device).reshape(1, -1, *[1] * (weight.dim() - 2))
        _set(module.bias, module.bias.detach().double() + shift.sum(dim=tuple(range(1, weight.dim()))))
    if gamma is not None:
        weight = weight * gamma.detach().double().to(weight.device).reshape(1, -1, *[1] * (weight.dim() - 2))
    rotated = torch.einsum("oi...,ij->oj...", weight, right.to(weight.device))
    _set(module.weight, rotated)


def fold_residual_rotation(model: nn.Module, spec: RotationSpec, *, seed: int = 0) -> RotationReport:
    """Rotate the residual stream by a randomized Hadamard, folded into weights in place.

    LayerNorms listed in ``spec.norm_readers`` are replaced by affine-free ``nn.RMSNorm`` modules. The whole
    spec is validated first; on a ValueError the model is unchanged.
    """
    writers, readers = _validate(model, spec)
    dim = spec.dim
    h = random_hadamard(dim, seed, mean_to_first=not spec.fold_centring)
    if spec.fold_centring:
        into_stream = h @ (torch.eye(dim, dtype=torch.float64) - 1.0 / dim)
    else:
        into_stream = h
    report = RotationReport(stream_matrix=into_stream.float(), hadamard=h.float())
    for _, linears in readers:
        for name, module in linears:
            report.outlier_ratio_before[name] = outlier_ratio(module.weight)

    for name, module, gamma in writers:
        if gamma is not None:
            _fold_output_side(module, torch.diag(gamma.detach().double()))
            with torch.no_grad():
                gamma.fill_(1.0)
        _fold_output_side(module, into_stream)
        report.rotated_outputs.append(name)

    for param in spec.stream_parameters:
        _set(param, param.detach().double() @ into_stream.T.to(param.device))

    for (norm_name, norm, width), linears in readers:
        rotation_t = _block_diag(h, width // dim).T
        gamma = getattr(norm, "weight", None)
        beta = getattr(norm, "bias", None)
        for name, linear in linears:
            _fold_input_side(linear, gamma, beta, rotation_t)
            report.rotated_inputs.append(name)
        eps = norm.eps if norm.eps is not None else torch.finfo(torch.float32).eps
        if spec.fold_centring:
            replacement: nn.Module = nn.RMSNorm(width, eps=eps, elementwise_affine=False)
        else:
            replacement = RotatedLayerNorm(width, dim, eps)
        _replace_module(model, norm_name, replacement)
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


class RotatedLayerNorm(nn.Module):
    """Affine-free LayerNorm of the original stream(s), computed in the ``mean_to_first`` rotated basis.

    Each concatenated copy of the stream carries sqrt(dim) * its mean in its coordinate 0; LayerNorm's joint
    centring only changes those coordinates (each minus their average), after which RMSNorm commutes with
    the rotation. Cost: a handful of elementwise ops per token.
    """

    def __init__(self, width: int, dim: int, eps: float) -> None:
        super().__init__()
        if width % dim:
            raise ValueError(f"width {width} is not a multiple of the stream width {dim}")
        mask = torch.zeros(width)
        mask[::dim] = 1.0
        self.register_buffer("mean_slots", mask)
        self.copies = width // dim
        self.width = width
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        slot_mean = (x * self.mean_slots).sum(dim=-1, keepdim=True) / self.copies
        return F.rms_norm(x - slot_mean * self.mean_slots, (self.width,), eps=self.eps)


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
        # One 2-D matmul over all leading dims: `x @ M.T` on a 3-D or 4-D x exports as expand + bmm, and
        # XNNPACK leaves the expand outside its delegate (a second segment). Not a linear: the W4 recipes
        # quantize linears, and the rotation must stay exact.
        return (x.reshape(-1, x.shape[-1]) @ self.matrix.T).reshape(x.shape)


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


class DelegableRotatedLayerNorm(nn.Module):
    """``RotatedLayerNorm``'s arithmetic on a [A, N, width, 1] view, means over dims (2, 3) with keepdim.

    Why: exported as is, its rms_norm and sum do not reach XNNPACK (they split every block into separate
    delegates); this is the form `passes.decompose_layer_norm` gives LayerNorm, which XNNPACK takes whole.
    The mean-slot sum is a masked mean times ``width / copies``.
    """

    def __init__(self, source: RotatedLayerNorm) -> None:
        super().__init__()
        self.width, self.copies, self.eps = source.width, source.copies, float(source.eps)
        self.register_buffer("mean_slots", source.mean_slots.detach().clone().reshape(1, 1, -1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x4 = x.reshape(-1, x.shape[-2] if x.dim() > 1 else 1, self.width, 1)
        slot_mean = (x4 * self.mean_slots).mean(dim=(2, 3), keepdim=True) * (self.width / self.copies)
        centred = x4 - slot_mean * self.mean_slots
        variance = (centred * centred).mean(dim=(2, 3), keepdim=True)
        return (centred * torch.rsqrt(variance + self.eps)).reshape(x.shape)


def delegable_norms(model: nn.Module) -> None:
    """Swap every RotatedLayerNorm of `model` for its DelegableRotatedLayerNorm form, in place."""
    for name, module in list(model.named_modules()):
        if isinstance(module, RotatedLayerNorm):
            parent, _, child = name.rpartition(".")
            setattr(
                model.get_submodule(parent) if parent else model, child, DelegableRotatedLayerNorm(module)
            )
