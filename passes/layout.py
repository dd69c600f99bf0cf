"""Collapse the reshape/permute/expand chains that einops and hand-written head splitting leave.

`einops.rearrange`/`repeat` and `.view/.unsqueeze/.flatten/.transpose` code produce chains of layout ops;
every one that survives becomes a copy kernel at run time (`view_copy`, `permute_copy`) and `expand_copy`
is not delegated by XNNPACK at all. This pass:
- writes view/unsqueeze/squeeze/flatten/unflatten as `reshape` (static shapes), merges reshape chains and
  drops identity reshapes;
- turns transposes into permutes, composes permute chains, drops identity permutes and turns permutes that
  only move size-1 dims into reshapes;
- drops identities (`detach`, `alias`, plain `clone`) of computed tensors;
- drops an `expand` whose users are element-wise ops that broadcast to the same shape anyway;
- rewrites 4-D+ batched `matmul` as a 3-D `bmm` (XNNPACK leaves the broadcast `expand_copy` outside).
"""

from __future__ import annotations

import torch
from torch.export import ExportedProgram
from torch.fx import Node

from .graph_utils import done, emit, permutation, prod, static_shape

aten = torch.ops.aten

_TO_RESHAPE = (
    aten.view.default,
    aten._unsafe_view.default,
    aten.unsqueeze.default,
    aten.squeeze.dim,
    aten.squeeze.dims,
    aten.squeeze.default,
    aten.flatten.using_ints,
    aten.unflatten.int,
)
_BROADCASTING = (aten.add.Tensor, aten.mul.Tensor, aten.sub.Tensor, aten.div.Tensor)
# Identities in an inference graph (`pred.detach()`); to_edge makes them `alias_copy`, which XNNPACK leaves out.
_IDENTITIES = (aten.detach.default, aten.alias.default, aten.lift_fresh_copy.default)


def _is(node, targets) -> bool:
    return isinstance(node, Node) and node.op == "call_function" and node.target in targets


def _replace(graph, node: Node, new: Node) -> None:
    node.replace_all_uses_with(new)
    graph.erase_node(node)


def simplify_layout(ep: ExportedProgram) -> tuple[ExportedProgram, int]:
    """Run the layout rewrites to a fixed point. Returns (program, rewrites)."""
    graph = ep.graph
    total = 0
    while True:
        changes = _one_sweep(graph)
        total += changes
        if not changes:
            break
    return done(ep, total)


def _one_sweep(graph) -> int:
    changes = 0
    for node in list(graph.nodes):
        if node.op != "call_function" or getattr(node, "_erased", False):
            continue
        shape = static_shape(node)
        if shape is None:
            continue
        src = node.args[0] if node.args else None
        if node.target in _TO_RESHAPE or node.target == aten.reshape.default:
            while _is(src, (aten.reshape.default,) + _TO_RESHAPE):
                src = src.args[0]
            if static_shape(src) == shape:
                _replace(graph, node, src)
                changes += 1
            elif node.target != aten.reshape.default or src is not node.args[0]:
                with graph.inserting_before(node):
                    new = emit(graph, aten.reshape.default, (src, shape), like=node)
                _replace(graph, node, new)
                changes += 1
        elif node.target in (aten.permute.default, aten.transpose.int):
            rank = len(shape)
            perm = permutation(node, rank)
            while _is(src, (aten.permute.default, aten.transpose.int)):
                inner = permutation(src, rank)
                perm = [inner[p] for p in perm]
                src = src.args[0]
            src_shape = static_shape(src)
            if perm == list(range(rank)):
                _replace(graph, node, src)
                changes += 1
            elif src_shape is not None and _only_moves_unit_dims(perm, src_shape):
                with graph.inserting_before(node):
                    new = emit(graph, aten.reshape.default, (src, shape), like=node)
                _replace(graph, node, new)
                changes += 1
            elif node.target != aten.permute.default or src is not node.args[0]:
                with graph.inserting_before(node):
                    new = emit(graph, aten.permute.default, (src, perm), like=node)
                _replace(graph, node, new)
                changes += 1
        elif node.target in _IDENTITIES or _is_plain_clone(node):
            if isinstance(src, Node) and src.op == "call_function":
                _replace(graph, node, src)
                changes += 1
        elif node.target == aten.expand.default:
            changes += _drop_broadcast_expand(graph, node)
        elif node.target == aten.matmul.default:
            changes += _matmul_to_bmm(graph, node)
    return changes


def _is_plain_clone(node: Node) -> bool:
    fmt = node.kwargs.get("memory_format")
    return node.target == aten.clone.default and fmt in (None, torch.preserve_format, torch.contiguous_format)


def _only_moves_unit_dims(perm: list[int], src_shape: list[int]) -> bool:
    """A permute is a reshape when the non-size-1 dims keep their relative order."""
    kept = [p for p in perm if src_shape[p] != 1]
    return kept == sorted(kept)


def _drop_broadcast_expand(graph, node: Node) -> int:
    src = node.args[0]
    out = static_shape(node)
    src_shape = static_shape(src)
    if out is None or src_shape is None:
        return 0
    changed = 0
    for user in list(node.users):
        if not _is(user, _BROADCASTING) or len(user.args) < 2:
            continue
        others = [a for a in user.args[:2] if a is not node]
        if len(others) != 1 or others[0] is node:
            continue
        other_shape = static_shape(others[0]) if isinstance(others[0], Node) else []
        if other_shape is None:
            continue
        try:
            broadcast = list(torch.broadcast_shapes(torch.Size(src_shape), torch.Size(other_shape)))
        except RuntimeError:
            continue
        if broadcast == static_shape(user):
            user.replace_input_with(node, src)
            changed += 1
    return changed


def _matmul_to_bmm(graph, node: Node) -> int:
    a, b = node.args[0], node.args[1]
    sa, sb, so = static_shape(a), static_shape(b), static_shape(node)
    if None in (sa, sb, so) or len(sa) < 3 or len(sb) < 3 or sa[:-2] != sb[:-2]:
        return 0
    batch = prod(sa[:-2])
    with graph.inserting_before(node):
        a3 = emit(graph, aten.reshape.default, (a, [batch, sa[-2], sa[-1]]), like=node)
        b3 = emit(graph, aten.reshape.default, (b, [batch, sb[-2], sb[-1]]), like=node)
        mm = emit(graph, aten.bmm.default, (a3, b3), like=node)
        out = emit(graph, aten.reshape.default, (mm, so), like=node)
    _replace(graph, node, out)
    return 1
