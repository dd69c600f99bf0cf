"""Rewrite LayerNorm and RMSNorm into mean/sub/mul/rsqrt/add on a 4-D view that XNNPACK delegates.

XNNPACK 1.5.1 does not take `native_layer_norm`, so each LayerNorm (block norms and per-head QK-norms alike)
splits a transformer block into several delegates; `rms_norm` is decomposed by `to_edge` into a `mean` over
the last dim and an `add.Scalar`, both left outside. Its `mean.dim` is only taken on 4-D inputs reduced over
dims (2, 3) with keepdim, hence the view [A, B, K, 1] with K the normalised size (`view4`).
"""

from __future__ import annotations

import torch
from torch.export import ExportedProgram
from torch.fx import Node

from .graph_utils import done, emit, prod, static_shape

aten = torch.ops.aten
LAYER_NORM_OPS = (aten.layer_norm.default, aten.native_layer_norm.default)


def view4(lead: list[int], k: int) -> list[int]:
    """The 4-D shape [A, B, K, 1] that reduces K elements per row of `lead` with XNNPACK's mean over (2, 3)."""
    if len(lead) >= 2:
        return [prod(lead[:-1]), lead[-1], k, 1]
    return [1, prod(lead), k, 1]


def _scale_to_unit_rms(graph, node: Node, c: Node, eps: float, shape: list[int], weight) -> Node:
    """c * rsqrt(mean(c²) + eps) on the 4-D view, reshaped back to `shape` and scaled by `weight` if any."""
    square = emit(graph, aten.mul.Tensor, (c, c), like=node)
    var = emit(graph, aten.mean.dim, (square, [2, 3], True), like=node)
    rstd = emit(graph, aten.rsqrt.default, (emit(graph, aten.add.Tensor, (var, eps), like=node),), like=node)
    out = emit(
        graph, aten.reshape.default, (emit(graph, aten.mul.Tensor, (c, rstd), like=node), shape), like=node
    )
    if weight is not None:
        out = emit(graph, aten.mul.Tensor, (out, weight), like=node)
    return out


def decompose_layer_norm(ep: ExportedProgram) -> tuple[ExportedProgram, int]:
    """Replace every LayerNorm by its arithmetic. Returns (program, rewrites)."""
    graph = ep.graph
    count = 0
    for node in [n for n in graph.nodes if n.op == "call_function" and n.target in LAYER_NORM_OPS]:
        x, normalized_shape = node.args[0], list(node.args[1])
        weight = node.args[2] if len(node.args) > 2 else node.kwargs.get("weight")
        bias = node.args[3] if len(node.args) > 3 else node.kwargs.get("bias")
        eps = node.args[4] if len(node.args) > 4 else node.kwargs.get("eps", 1e-5)
        shape = static_shape(x)
        if shape is None:  # dynamic shapes: left as is (the audit shows it); export static shapes to rewrite
            continue
        if node.target == aten.native_layer_norm.default:
            users = list(node.users)
            # Only the normalised output (getitem 0) may be read; mean/rstd outputs need the fused op.
            if any(getattr(u.target, "__name__", "") != "getitem" or u.args[1] != 0 for u in users):
                continue
        k = prod(normalized_shape)
        lead = shape[: len(shape) - len(normalized_shape)]
        with graph.inserting_before(node):
            x4 = emit(graph, aten.reshape.default, (x, view4(lead, k)), like=node)
            mean = emit(graph, aten.mean.dim, (x4, [2, 3], True), like=node)
            centred = emit(graph, aten.sub.Tensor, (x4, mean), like=node)
            out = _scale_to_unit_rms(graph, node, centred, float(eps), shape, weight)
            if bias is not None:
                out = emit(graph, aten.add.Tensor, (out, bias), like=node)
        if node.target == aten.native_layer_norm.default:
            for u in list(node.users):
                u.replace_all_uses_with(out)
                graph.erase_node(u)
        else:
            node.replace_all_uses_with(out)
        graph.erase_node(node)
        count += 1
    return done(ep, count)


RMS_NORM_OPS = (aten.rms_norm.default,)


def decompose_rms_norm(ep: ExportedProgram) -> tuple[ExportedProgram, int]:
    """Replace every `rms_norm` by x * rsqrt(mean(x²) + eps) (* weight) on the 4-D view. Returns (program,
    rewrites)."""
    graph = ep.graph
    count = 0
    for node in [n for n in graph.nodes if n.op == "call_function" and n.target in RMS_NORM_OPS]:
        x, normalized_shape = node.args[0], list(node.args[1])
        weight = node.args[2] if len(node.args) > 2 else node.kwargs.get("weight")
        eps = node.args[3] if len(node.args) > 3 else node.kwargs.get("eps")
        shape = static_shape(x)
        if shape is None:
            continue
        if eps is None:  # PyTorch's default: the dtype's machine epsilon
            eps = torch.finfo(node.meta["val"].dtype).eps
        k = prod(normalized_shape)
        lead = shape[: len(shape) - len(normalized_shape)]
        with graph.inserting_before(node):
            x4 = emit(graph, aten.reshape.default, (x, view4(lead, k)), like=node)
            out = _scale_to_unit_rms(graph, node, x4, float(eps), shape, weight)
        node.replace_all_uses_with(out)
        graph.erase_node(node)
        count += 1
    return done(ep, count)
