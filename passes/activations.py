"""Write the activations XNNPACK gets wrong or does not take as the ops it does take.

- `gelu(x, approximate="tanh")`: XNNPACK 1.5.1's GELU config ignores `approximate` and delegates the erf form,
  so a tanh-GELU model would silently compute a different function (errors ~1e-3). Written out as
  0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))), PyTorch's own definition.
- `silu(x)` (SiLU and SwiGLU MLPs): XNNPACK has no SiLU; `x * sigmoid(x)` is delegated.
"""

from __future__ import annotations

import math

import torch
from torch.export import ExportedProgram

from .graph_utils import done, emit

aten = torch.ops.aten


def explicit_activations(ep: ExportedProgram) -> tuple[ExportedProgram, int]:
    """Rewrite tanh-GELU and SiLU. Returns (program, rewrites)."""
    graph = ep.graph
    count = 0
    for node in list(graph.nodes):
        if node.op != "call_function":
            continue
        x = node.args[0] if node.args else None
        if node.target == aten.silu.default:
            with graph.inserting_before(node):
                new = emit(
                    graph, aten.mul.Tensor, (x, emit(graph, aten.sigmoid.default, (x,), like=node)), like=node
                )
        elif node.target == aten.gelu.default and node.kwargs.get("approximate", "none") == "tanh":
            with graph.inserting_before(node):
                cube = emit(
                    graph, aten.mul.Tensor, (emit(graph, aten.mul.Tensor, (x, x), like=node), x), like=node
                )
                inner = emit(
                    graph,
                    aten.add.Tensor,
                    (x, emit(graph, aten.mul.Tensor, (cube, 0.044715), like=node)),
                    like=node,
                )
                scaled = emit(graph, aten.mul.Tensor, (inner, math.sqrt(2.0 / math.pi)), like=node)
                one_plus = emit(
                    graph,
                    aten.add.Tensor,
                    (emit(graph, aten.tanh.default, (scaled,), like=node), 1.0),
                    like=node,
                )
                half_x = emit(graph, aten.mul.Tensor, (x, 0.5), like=node)
                new = emit(graph, aten.mul.Tensor, (half_x, one_plus), like=node)
        else:
            continue
        node.replace_all_uses_with(new)
        graph.erase_node(node)
        count += 1
    return done(ep, count)
