"""Keep compute ops at rank <= 4 (QNN HTP and TFLite want it), and make scalar operands match the tensor dtype.

`sink_reshapes`: an element-wise op on a rank-5 tensor that is only reshaped to rank <= 4 afterwards (e.g.
image normalisation `(images - mean) / std` on [B, S, 3, H, W] before `reshape(B*S, 3, H, W)`) is moved
after the reshape, its constant operand reshaped to match (size-1 dims kept where the constant does not
vary), so the rank-5 tensor is only ever reshaped.

`split_permutes`: a permute of rank > 4 (einops patchify `b c (h p1) (w p2) -> b (h w) (p1 p2 c)` permutes
6 dims) as a few rank-4 permutes of adjacent blocks between reshapes.

`signed_expm1`: `sign(x) * expm1(|x|)` (inverse-log output activations) in ops XNNPACK has.

`float_scalars`: `1 + x` on a float tensor exports with an int scalar, which `to_edge` turns into an int64
constant plus a dtype cast that XNNPACK leaves outside; the scalar is written as a float instead.
"""

from __future__ import annotations

import torch
from torch.export import ExportedProgram
from torch.fx import Node

from .graph_utils import (
    add_constant,
    const_kind_of,
    constant_value,
    done,
    emit,
    permutation,
    prod,
    static_shape,
)

aten = torch.ops.aten
_BINARY = (aten.add.Tensor, aten.sub.Tensor, aten.mul.Tensor, aten.div.Tensor, aten.rsub.Scalar)
_UNARY = (
    aten.exp.default,
    aten.relu.default,
    aten.gelu.default,
    aten.sigmoid.default,
    aten.neg.default,
    aten.abs.default,
    aten.tanh.default,
    aten.sqrt.default,
    aten.rsqrt.default,
)
_RESHAPES = (aten.reshape.default, aten.view.default, aten._unsafe_view.default)


def _compact_constant(c: torch.Tensor, full: list[int], target: list[int]) -> torch.Tensor:
    """c broadcast to `full`, reshaped to `target`, with every dim along which it is constant cut to 1."""
    out = c.expand(full).reshape(target)
    for d in range(out.dim()):
        first = out.narrow(d, 0, 1)
        if out.shape[d] > 1 and torch.equal(first.expand_as(out), out):
            out = first
    return out.contiguous()


def sink_reshapes(ep: ExportedProgram) -> tuple[ExportedProgram, int]:
    """Move rank-lowering reshapes above element-wise ops with constant operands. Returns (program, moves)."""
    graph = ep.graph
    consts = const_kind_of(ep)
    moves = 0
    changed = True
    while changed:
        changed = False
        for node in list(graph.nodes):
            if getattr(node, "_erased", False) or node.op != "call_function" or node.target not in _RESHAPES:
                continue
            e, target = node.args[0], static_shape(node)
            full = static_shape(e) if isinstance(e, Node) else None
            if target is None or full is None or len(full) <= 4 or len(target) > 4 or len(e.users) != 1:
                continue
            if e.op != "call_function" or e.target not in _BINARY + _UNARY:
                continue
            new = _rewrite(ep, node, e, full, target, consts)
            if new is not None:
                node.replace_all_uses_with(new)
                graph.erase_node(node)
                graph.erase_node(e)
                moves += 1
                changed = True
    return done(ep, moves)


def _rewrite(ep, reshape: Node, e: Node, full, target, consts) -> Node | None:
    graph = ep.graph
    if e.target in _UNARY:
        x = e.args[0]
        if static_shape(x) != full:
            return None
        with graph.inserting_before(reshape):
            r = emit(graph, aten.reshape.default, (x, target), like=reshape)
            return emit(graph, e.target, (r, *e.args[1:]), dict(e.kwargs), like=e)
    args = list(e.args)
    tensor_pos = [i for i, a in enumerate(args[:2]) if isinstance(a, Node) and static_shape(a) == full]
    if len(tensor_pos) != 1:
        return None
    i = tensor_pos[0]
    other_i = 1 - i
    if other_i < len(args) and isinstance(args[other_i], Node):
        other = args[other_i]
        if other.op != "placeholder" or other.name not in consts:
            return None
        c = constant_value(ep, consts[other.name])
        args[other_i] = add_constant(ep, _compact_constant(c, full, target), "_reshaped_const")
    with graph.inserting_before(reshape):
        args[i] = emit(graph, aten.reshape.default, (args[i], target), like=reshape)
        return emit(graph, e.target, tuple(args), dict(e.kwargs), like=e)


def float_scalars(ep: ExportedProgram) -> tuple[ExportedProgram, int]:
    """Write int scalars of float element-wise ops as floats; in fp16/bf16 graphs, as 0-d constants of that
    dtype (to_edge would otherwise lift them as fp32 and add a cast XNNPACK leaves out). Returns (program,
    rewrites)."""
    count = 0
    for node in list(ep.graph.nodes):
        if node.op != "call_function" or node.target not in _BINARY[:4]:
            continue
        out = node.meta.get("val")
        if not isinstance(out, torch.Tensor) or not out.dtype.is_floating_point:
            continue
        args = list(node.args)
        hits = [i for i, a in enumerate(args[:2]) if isinstance(a, (int, float)) and not isinstance(a, bool)]
        low_precision = out.dtype in (torch.float16, torch.bfloat16)
        changed = False
        for i in hits:
            if low_precision:
                args[i] = add_constant(ep, torch.tensor(float(args[i]), dtype=out.dtype), "_scalar_const")
                changed = True
            elif isinstance(args[i], int):
                args[i] = float(args[i])
                changed = True
        if changed:
            node.args = tuple(args)
            count += 1
    return done(ep, count)


def signed_expm1(ep: ExportedProgram) -> tuple[ExportedProgram, int]:
    """`sign(x) * expm1(|x|)` → `exp(relu(x)) - exp(relu(-x))`: XNNPACK has neither sign nor expm1.

    Equal for every x (both are 0 at 0); the only difference is exp(·) - 1 rounding instead of expm1's
    (absolute error ~1e-7, relatively large only where the result is itself ~0).
    """
    graph = ep.graph
    count = 0
    for node in list(graph.nodes):
        if node.op != "call_function" or node.target != aten.mul.Tensor or len(node.args) != 2:
            continue
        a, b = node.args
        if _is_op(b, aten.sign.default):
            a, b = b, a
        if not (_is_op(a, aten.sign.default) and _is_op(b, aten.expm1.default)):
            continue
        if not _is_op(b.args[0], aten.abs.default):
            continue
        x = a.args[0]
        if b.args[0].args[0] is not x:
            continue
        with graph.inserting_before(node):
            pos = emit(graph, aten.exp.default, (emit(graph, aten.relu.default, (x,), like=node),), like=node)
            neg = emit(graph, aten.neg.default, (x,), like=node)
            negpart = emit(
                graph, aten.exp.default, (emit(graph, aten.relu.default, (neg,), like=node),), like=node
            )
            out = emit(graph, aten.sub.Tensor, (pos, negpart), like=node)
        node.replace_all_uses_with(out)
        graph.erase_node(node)
        count += 1
    return done(ep, count)


def _is_op(node, target) -> bool:
    return isinstance(node, Node) and node.op == "call_function" and node.target == target


def split_permutes(ep: ExportedProgram, max_rank: int = 4) -> tuple[ExportedProgram, int]:
    """Rewrite every permute/transpose of rank > `max_rank` as swaps of two adjacent blocks of dims, each a
    rank-4 permute [prefix, A, B, suffix] -> [prefix, B, A, suffix]. Returns (program, rewrites)."""
    graph = ep.graph
    count = 0
    for node in list(graph.nodes):
        if node.op != "call_function" or node.target not in (aten.permute.default, aten.transpose.int):
            continue
        shape, out_shape = static_shape(node.args[0]), static_shape(node)
        if shape is None or out_shape is None or len(shape) <= max_rank:
            continue
        perm = permutation(node, len(shape))
        with graph.inserting_before(node):
            x, order = node.args[0], list(range(len(shape)))
            for i in range(len(perm)):
                j = order.index(perm[i])
                if j == i:
                    continue
                k = j + 1  # move the longest run that is already in the wanted order
                while k < len(order) and k - j + i < len(perm) and order[k] == perm[k - j + i]:
                    k += 1
                blocks = [order[:i], order[i:j], order[j:k], order[k:]]
                view = [prod(shape[d] for d in b) for b in blocks]
                x = emit(graph, aten.reshape.default, (x, view), like=node)
                x = emit(graph, aten.permute.default, (x, [0, 2, 1, 3]), like=node)
                order = blocks[0] + blocks[2] + blocks[1] + blocks[3]
            out = emit(graph, aten.reshape.default, (x, out_shape), like=node)
        node.replace_all_uses_with(out)
        graph.erase_node(node)
        count += 1
    return done(ep, count)
