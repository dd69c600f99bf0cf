"""Rewrite `mean` over any dims of any rank into XNNPACK's one supported form: 4-D, dims (2, 3), keepdim.

Averaging over views (`x.mean(1)` on [B, S, N, D]), pooling tokens (`x.mean(1)` on [B, N, D]) or a
hand-written RMSNorm (`x.pow(2).mean(-1, keepdim=True)`) each leave a `mean.dim` outside the XNNPACK delegate
and split it. Written as permute (only when the reduced dims are not already the innermost ones) → reshape to
[A, B, K, 1] with K the number of averaged elements → mean over (2, 3) → reshape to the result's shape, the
reduction is delegated. Same elements averaged; only the summation order may differ (float rounding).
"""

from __future__ import annotations

import torch
from torch.export import ExportedProgram
from torch.fx import Node

from .graph_utils import done, emit, prod, static_shape
from .layer_norm import view4

aten = torch.ops.aten


def _is_xnnpack_form(shape: list[int], dims: list[int], keepdim: bool) -> bool:
    return len(shape) == 4 and sorted(dims) == [2, 3] and keepdim


def reduce_means(ep: ExportedProgram) -> tuple[ExportedProgram, int]:
    """Rewrite every static-shape `mean.dim` not already in XNNPACK's form. Returns (program, rewrites)."""
    graph = ep.graph
    count = 0
    for node in [n for n in graph.nodes if n.op == "call_function" and n.target == aten.mean.dim]:
        x = node.args[0]
        shape, out_shape = static_shape(x), static_shape(node)
        if shape is None or out_shape is None or node.kwargs.get("dtype") is not None or not shape:
            continue
        rank = len(shape)
        dims_arg = node.args[1] if len(node.args) > 1 else None
        dims = sorted({int(d) % rank for d in dims_arg} if dims_arg else range(rank))
        keepdim = bool(node.args[2]) if len(node.args) > 2 else bool(node.kwargs.get("keepdim", False))
        if _is_xnnpack_form(shape, dims, keepdim):
            continue
        kept = [d for d in range(rank) if d not in dims]
        with graph.inserting_before(node):
            src: Node = x
            if dims != list(range(rank - len(dims), rank)):  # reduced dims innermost first
                src = emit(graph, aten.permute.default, (x, kept + dims), like=node)
            lead = [shape[d] for d in kept]
            x4 = emit(
                graph, aten.reshape.default, (src, view4(lead, prod(shape[d] for d in dims))), like=node
            )
            mean = emit(graph, aten.mean.dim, (x4, [2, 3], True), like=node)
            out = emit(graph, aten.reshape.default, (mean, out_shape), like=node)
        node.replace_all_uses_with(out)
        graph.erase_node(node)
        count += 1
    return done(ep, count)
