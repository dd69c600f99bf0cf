"""Materialise the `expand`s no consumer broadcasts by itself as a multiply by ones, which XNNPACK delegates.

`einops.repeat`, `x.expand(...)` and a pooled token broadcast back over the sequence (`cat((t,
pooled.expand(-1, N, -1)), -1)`) export as `expand`, which becomes `expand_copy` — not delegated by XNNPACK,
so each one splits the program. `simplify_layout` already drops expands whose users are element-wise ops
that broadcast anyway; for the rest (a concat, a matmul, a reshape of the repeated tensor ...) the copy is
needed, and `x * ones` with `ones` shaped 1 except along the expanded dims makes it by the multiply's own
broadcasting. Exact: multiplying by 1.0 changes no float value (infinities and NaNs included).
"""

from __future__ import annotations

import torch
from torch.export import ExportedProgram

from .graph_utils import add_constant, done, emit, static_shape

aten = torch.ops.aten


def broadcast_expand(ep: ExportedProgram) -> tuple[ExportedProgram, int]:
    """Replace every static float `expand` by `x * ones`. Returns (program, rewrites)."""
    graph = ep.graph
    count = 0
    for node in [n for n in graph.nodes if n.op == "call_function" and n.target == aten.expand.default]:
        x = node.args[0]
        src, out = static_shape(x), static_shape(node)
        if src is None or out is None or not node.meta["val"].dtype.is_floating_point:
            continue
        aligned = [1] * (len(out) - len(src)) + src
        ones_shape = [o if a == 1 and o != 1 else 1 for a, o in zip(aligned, out, strict=True)]
        ones = add_constant(ep, torch.ones(ones_shape, dtype=node.meta["val"].dtype), "_broadcast_ones")
        with graph.inserting_before(node):
            new = emit(graph, aten.mul.Tensor, (x, ones), like=node)
        node.replace_all_uses_with(new)
        graph.erase_node(node)
        count += 1
    return done(ep, count)
