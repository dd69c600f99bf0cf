"""`masked_fill` with a constant mask, as arithmetic with constants (XNNPACK has no select).

Hand-written attention masks its scores with `scores.masked_fill(mask, -inf)` (causal or window masks built
from constants). ExecuTorch lowers `masked_fill` to `where` and a `scalar_tensor`, neither of which XNNPACK
takes: the program splits into several delegate segments around them. With the mask a constant (after
`fold_constants`) the fill is exact arithmetic:

- value ±inf: `x + fill`, fill = value where the mask is set, else 0 (x finite: x + -inf = -inf);
- finite value: `x * keep + fill`, keep = 1 where the mask is clear, else 0.
"""

from __future__ import annotations

import math

import torch
from torch.export import ExportedProgram

from .graph_utils import add_constant, const_kind_of, constant_value, done, emit, filled_constant

aten = torch.ops.aten


def constant_masked_fill(ep: ExportedProgram) -> tuple[ExportedProgram, int]:
    """Rewrite every `masked_fill(x, constant bool mask, scalar)` of a floating x. Returns (program, rewrites)."""
    graph = ep.graph
    count = 0
    consts = const_kind_of(ep)  # the masks: constants before this pass (the ones it adds are not masks)
    for node in [n for n in graph.nodes if n.op == "call_function" and n.target is aten.masked_fill.Scalar]:
        x, mask, value = node.args
        dtype = node.meta["val"].dtype
        if not (mask.op == "placeholder" and mask.name in consts) or not dtype.is_floating_point:
            continue
        filled = constant_value(ep, consts[mask.name]).to(torch.bool)
        fill = filled_constant(filled, float(value), dtype)
        with graph.inserting_before(node):
            if math.isinf(float(value)):
                scaled = x
            else:
                keep = add_constant(ep, (~filled).to(dtype), "_masked_fill_keep")
                scaled = emit(graph, aten.mul.Tensor, (x, keep), like=node)
            out = emit(
                graph, aten.add.Tensor, (scaled, add_constant(ep, fill, "_masked_fill_value")), like=node
            )
        node.replace_all_uses_with(out)
        graph.erase_node(node)
        count += 1
    return done(ep, count)


__all__ = ["constant_masked_fill"]
