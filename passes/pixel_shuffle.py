"""`pixel_shuffle` (depth-to-space) as reshapes and two 4-D permutes.

`to_edge` decomposes `aten.pixel_shuffle` into a 6-D view/permute plus a `clone` that XNNPACK leaves
outside its delegate (a second segment per shuffle). Written here with rank-4 permutes only, every piece
is a plain layout op that XNNPACK delegates and that rank-limited backends (QNN, TFLite) accept:

    [L, C·r·r, H, W] → [L·C·r, r, H, W] → permute(0, 2, 3, 1) → [L·C, r, H, W·r]
                     → permute(0, 2, 1, 3) → [L·C, H, r, W·r] → [L, C, H·r, W·r]
"""

from __future__ import annotations

import torch
from torch.export import ExportedProgram

from .graph_utils import emit, finalize, prod, static_shape

aten = torch.ops.aten


def decompose_pixel_shuffle(ep: ExportedProgram) -> tuple[ExportedProgram, int]:
    """Rewrite every static-shape `pixel_shuffle`. Returns (program, rewrites)."""
    graph = ep.graph
    count = 0
    for node in list(graph.nodes):
        if node.op != "call_function" or node.target != aten.pixel_shuffle.default:
            continue
        src, r = node.args[0], int(node.args[1])
        shape, out_shape = static_shape(src), static_shape(node)
        if shape is None or out_shape is None or len(shape) < 3:
            continue
        *lead, channels, height, width = shape
        lc = prod(lead) * channels // (r * r)
        with graph.inserting_before(node):
            x = emit(graph, aten.reshape.default, (src, [lc * r, r, height, width]), like=node)
            x = emit(graph, aten.permute.default, (x, [0, 2, 3, 1]), like=node)  # column sub-pixel last
            x = emit(graph, aten.reshape.default, (x, [lc, r, height, width * r]), like=node)
            x = emit(graph, aten.permute.default, (x, [0, 2, 1, 3]), like=node)  # row sub-pixel under H
            x = emit(graph, aten.reshape.default, (x, out_shape), like=node)
        node.replace_all_uses_with(x)
        graph.erase_node(node)
        count += 1
    return finalize(ep), count
