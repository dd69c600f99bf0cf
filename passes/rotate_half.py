"""Rewrite RoPE's rotate-half `cat(-x[..., D/2:], x[..., :D/2])` into a form without the `neg`.

mode="sign" (default): `cat(x2, x1) * s` with the constant sign vector s = [-1]*D/2 + [1]*D/2; when the
rotation is only multiplied by a constant (RoPE's sin table, after constant folding) s is folded into that
constant, so the rotation costs two slices and a concat, all delegated by XNNPACK.
mode="matmul": `linear(x, Pᵀ)` with a constant signed permutation P (one fully-connected op, D² MACs per
row; for backends that prefer one matmul to slices and concats).
Both are exact in floating point (multiplications by ±1 and 0).
"""

from __future__ import annotations

import torch
from torch.export import ExportedProgram
from torch.fx import Node

from .graph_utils import add_constant, const_kind_of, constant_value, done, emit, static_shape

aten = torch.ops.aten


def _slice_bounds(node: Node, size: int) -> tuple[Node, int, int, int] | None:
    if not (isinstance(node, Node) and node.op == "call_function" and node.target == aten.slice.Tensor):
        return None
    x = node.args[0]
    shape = static_shape(x)
    if shape is None:
        return None
    dim = int(node.args[1]) if len(node.args) > 1 else 0
    start = node.args[2] if len(node.args) > 2 else 0
    end = node.args[3] if len(node.args) > 3 else None
    step = node.args[4] if len(node.args) > 4 else 1
    if step != 1 or not isinstance(start or 0, int) or not isinstance(end if end is not None else 0, int):
        return None
    d = dim % len(shape)
    n = shape[d]
    start = (start or 0) + (n if (start or 0) < 0 else 0)
    end = n if end is None else min(end + (n if end < 0 else 0), n)
    return x, d, start, end


def _match(cat: Node) -> tuple[Node, int, int] | None:
    """(x, dim, D) when `cat` is rotate-half of x along its last dim."""
    tensors = cat.args[0]
    if len(tensors) != 2:
        return None
    neg, lo = tensors
    if not (isinstance(neg, Node) and neg.op == "call_function" and neg.target == aten.neg.default):
        return None
    hi = _slice_bounds(neg.args[0], 0)
    low = _slice_bounds(lo, 0)
    if hi is None or low is None or hi[0] is not low[0] or hi[1] != low[1]:
        return None
    x, d = hi[0], hi[1]
    shape = static_shape(x)
    size = shape[d]
    cat_dim = (int(cat.args[1]) if len(cat.args) > 1 else 0) % len(shape)
    if size % 2 or cat_dim != d or d != len(shape) - 1:
        return None
    if (hi[2], hi[3]) != (size // 2, size) or (low[2], low[3]) != (0, size // 2):
        return None
    return x, d, size


def _sign(size: int, dtype: torch.dtype) -> torch.Tensor:
    return torch.cat([-torch.ones(size // 2, dtype=dtype), torch.ones(size // 2, dtype=dtype)])


def rewrite_rotate_half(ep: ExportedProgram, mode: str = "sign") -> tuple[ExportedProgram, int]:
    """Returns (program, rewrites)."""
    if mode not in ("sign", "matmul"):
        raise ValueError(f"rotate-half mode must be 'sign' or 'matmul', got {mode!r}")
    graph = ep.graph
    consts = const_kind_of(ep)
    count = 0
    for cat in [n for n in graph.nodes if n.op == "call_function" and n.target == aten.cat.default]:
        found = _match(cat)
        if found is None:
            continue
        x, d, size = found
        dtype = cat.meta["val"].dtype
        if not dtype.is_floating_point:
            continue
        with graph.inserting_before(cat):
            if mode == "matmul":
                perm = torch.zeros(size, size, dtype=dtype)
                h = size // 2
                for j in range(h):
                    perm[j + h, j] = -1.0  # out[j] = -x[j + h]
                    perm[j, j + h] = 1.0  # out[j + h] = x[j]
                weight = add_constant(ep, perm.t().contiguous(), "_rotate_half_weight")
                cat.replace_all_uses_with(emit(graph, aten.linear.default, (x, weight), like=cat))
                count += 1
                continue
            hi, lo = cat.args[0][0].args[0], cat.args[0][1]
            swapped = emit(graph, aten.cat.default, ([hi, lo], d), like=cat)
            sign = _sign(size, dtype)
            folded = _fold_sign_into_users(ep, cat, swapped, sign, consts)
            if not folded:
                sign_node = add_constant(ep, sign, "_rotate_half_sign")
                cat.replace_all_uses_with(emit(graph, aten.mul.Tensor, (swapped, sign_node), like=cat))
        count += 1
    return done(ep, count)


def _fold_sign_into_users(ep, cat: Node, swapped: Node, sign: torch.Tensor, consts) -> bool:
    """mul(rot, C) with C constant → mul(swapped, C * sign), for every user; False if any user differs."""
    users = list(cat.users)
    plans = []
    for u in users:
        if u.op != "call_function" or u.target != aten.mul.Tensor:
            return False
        other = u.args[1] if u.args[0] is cat else u.args[0]
        is_const = isinstance(other, Node) and other.op == "placeholder" and other.name in consts
        if other is cat or not is_const:
            return False
        c = constant_value(ep, consts[other.name])
        if c.dim() == 0 or c.shape[-1] not in (1, sign.numel()):
            return False
        signed = (c * sign).contiguous()
        if list(torch.broadcast_shapes(signed.shape, cat.meta["val"].shape)) != list(u.meta["val"].shape):
            return False
        plans.append((u, signed))
    graph = ep.graph
    for u, signed in plans:
        node = add_constant(ep, signed, "_rope_signed_sin")
        with graph.inserting_before(u):
            new = emit(graph, aten.mul.Tensor, (swapped, node), like=u)
        u.replace_all_uses_with(new)
        graph.erase_node(u)
    return True
