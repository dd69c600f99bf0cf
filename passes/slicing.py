"""Turn `select` / `unbind` / `chunk` / `split` into static slices, pushed through permutes and reshapes.

XNNPACK 1.5.1 delegates `slice_copy` but not `select_copy`, and the usual qkv split
(`reshape(B, N, 3, H, D).permute(2, 0, 3, 1, 4)` then `qkv[0]` or `unbind(0)`, also what
`einops.rearrange(..., "b n (three h d) -> three b h n d")` exports) makes a rank-5 tensor that QNN's HTP
and TFLite dislike. Moving the selection before the permute and the reshape turns it into a slice of the
linear's output followed by a rank-4 reshape and permute: no select, no rank-5 tensor.
"""

from __future__ import annotations

import collections
import operator

import torch
from torch.export import ExportedProgram
from torch.fx import Node

from .graph_utils import done, emit, permutation, prod, static_shape

aten = torch.ops.aten
SELECT_OPS = (aten.select.int,)
UNBIND_OPS = (aten.unbind.int,)
SPLIT_OPS = (aten.split.Tensor, aten.split_with_sizes.default, aten.chunk.default, aten.tensor_split.sections)
RESHAPE_OPS = (aten.reshape.default, aten.view.default, aten._unsafe_view.default)


def reshape_groups(src: list[int], dst: list[int]) -> list[tuple[range, range]] | None:
    """Pair up runs of source and destination dims with equal products (how a reshape splits/merges)."""
    groups: list[tuple[range, range]] = []
    i = j = 0
    while i < len(src) or j < len(dst):
        i0, j0 = i, j
        if i < len(src) and j < len(dst) and src[i] == dst[j]:
            groups.append((range(i, i + 1), range(j, j + 1)))
            i, j = i + 1, j + 1
            continue
        ps = src[i] if i < len(src) else 1
        pd = dst[j] if j < len(dst) else 1
        i, j = min(i + 1, len(src)), min(j + 1, len(dst))
        while ps != pd:
            if ps < pd and i < len(src):
                ps *= src[i]
                i += 1
            elif pd < ps and j < len(dst):
                pd *= dst[j]
                j += 1
            else:
                return None
        groups.append((range(i0, i), range(j0, j)))
    return groups


def _getitem_users(node: Node) -> list[Node] | None:
    users = list(node.users)
    if all(u.target is operator.getitem for u in users):
        return users
    return None


def _split_bounds(node: Node, size: int) -> list[tuple[int, int]] | None:
    t = node.target
    if t == aten.split.Tensor:
        step = int(node.args[1])
        return [(s, min(s + step, size)) for s in range(0, size, step)]
    if t == aten.split_with_sizes.default:
        out, s = [], 0
        for n in node.args[1]:
            out.append((s, s + int(n)))
            s += int(n)
        return out
    if t == aten.chunk.default:
        chunks = int(node.args[1])
        step = -(-size // chunks)
        return [(s, min(s + step, size)) for s in range(0, size, step)]
    return None


def _dim_arg(node: Node, index: int, default: int, rank: int) -> int:
    d = node.args[index] if len(node.args) > index else node.kwargs.get("dim", default)
    return int(d) % rank


def select_to_slice(ep: ExportedProgram) -> tuple[ExportedProgram, int]:
    """Rewrite unbind/split/chunk into slices and selects, then every select into slice (+ reshape)."""
    graph = ep.graph
    changes = 0
    for node in [n for n in graph.nodes if n.op == "call_function" and n.target in UNBIND_OPS + SPLIT_OPS]:
        shape, users = static_shape(node.args[0]), _getitem_users(node)
        if shape is None or users is None:
            continue
        if node.target in UNBIND_OPS:
            d = _dim_arg(node, 1, 0, len(shape))
            for u in users:
                with graph.inserting_before(u):
                    new = emit(graph, aten.select.int, (node.args[0], d, int(u.args[1])), like=node)
                u.replace_all_uses_with(new)
                graph.erase_node(u)
        else:
            d = _dim_arg(node, 2, 0, len(shape))
            bounds = _split_bounds(node, shape[d])
            if bounds is None:
                continue
            for u in users:
                start, end = bounds[int(u.args[1])]
                with graph.inserting_before(u):
                    new = emit(graph, aten.slice.Tensor, (node.args[0], d, start, end), like=node)
                u.replace_all_uses_with(new)
                graph.erase_node(u)
        graph.erase_node(node)
        changes += 1

    work = collections.deque(n for n in graph.nodes if n.op == "call_function" and n.target in SELECT_OPS)
    while work:
        node = work.popleft()
        x = node.args[0]
        shape = static_shape(x)
        if shape is None:
            continue
        d = int(node.args[1]) % len(shape)
        i = int(node.args[2]) % shape[d]
        with graph.inserting_before(node):
            new, more = _push_select(graph, node, x, d, i, shape)
        node.replace_all_uses_with(new)
        graph.erase_node(node)
        work.extend(more)
        changes += 1
    return done(ep, changes)


def _push_select(graph, node: Node, x: Node, d: int, i: int, shape: list[int]) -> tuple[Node, list[Node]]:
    """Return the replacement of select(x, d, i) and any new selects still to be rewritten."""
    out_shape = shape[:d] + shape[d + 1 :]
    if x.op == "call_function" and x.target in (aten.permute.default, aten.transpose.int):
        perm = permutation(x, len(shape))
        src_dim = perm[d]
        rest = [p for k, p in enumerate(perm) if k != d]
        rest = [p - 1 if p > src_dim else p for p in rest]
        inner = emit(graph, aten.select.int, (x.args[0], src_dim, i), like=node)
        if rest == list(range(len(rest))):
            return inner, [inner]
        return emit(graph, aten.permute.default, (inner, rest), like=node), [inner]
    if x.op == "call_function" and x.target in RESHAPE_OPS:
        src = static_shape(x.args[0])
        groups = reshape_groups(src, shape) if src is not None else None
        for src_dims, dst_dims in groups or []:
            if d == dst_dims.start and len(src_dims) == 1:
                inner = prod(shape[d + 1 : dst_dims.stop])
                j = src_dims.start
                sl = emit(graph, aten.slice.Tensor, (x.args[0], j, i * inner, (i + 1) * inner), like=node)
                return emit(graph, aten.reshape.default, (sl, out_shape), like=node), []
    sl = emit(graph, aten.slice.Tensor, (x, d, i, i + 1), like=node)
    return emit(graph, aten.reshape.default, (sl, out_shape), like=node), []


def push_slices(ep: ExportedProgram) -> tuple[ExportedProgram, int]:
    """slice(permute(y)) → permute(slice(y)) and slice(reshape(z)) → reshape(slice(z)) where exact.

    Only when every user of the permute/reshape is a slice (otherwise the big tensor is still made). After
    per-head attention this slices q/k/v straight out of the qkv projection: the head permutes then only
    move size-1 dims, which `simplify_layout` turns into free reshapes.
    """
    graph = ep.graph
    moves = 0
    changed = True
    while changed:
        changed = False
        for src in list(graph.nodes):
            if getattr(src, "_erased", False) or src.op != "call_function" or not src.users:
                continue
            if src.target not in (aten.permute.default, aten.transpose.int) + RESHAPE_OPS:
                continue
            users = list(src.users)
            if not all(u.op == "call_function" and u.target == aten.slice.Tensor for u in users):
                continue
            plans = [_plan_slice(src, u) for u in users]
            if any(p is None for p in plans):
                continue
            for user, plan in zip(users, plans, strict=True):
                with graph.inserting_before(user):
                    new = plan()
                user.replace_all_uses_with(new)
                graph.erase_node(user)
            graph.erase_node(src)
            moves += 1
            changed = True
    return done(ep, moves)


def _plan_slice(src: Node, sl: Node):
    """A closure emitting the pushed-down replacement of `sl` = slice(src, ...), or None if not exact."""
    graph = src.graph
    shape = static_shape(src)
    inner_shape = static_shape(src.args[0])
    if shape is None or inner_shape is None or (len(sl.args) > 4 and sl.args[4] != 1):
        return None
    d = int(sl.args[1]) % len(shape)
    start = sl.args[2] if len(sl.args) > 2 and sl.args[2] is not None else 0
    end = sl.args[3] if len(sl.args) > 3 and sl.args[3] is not None else shape[d]
    if not isinstance(start, int) or not isinstance(end, int):
        return None
    start, end = (
        max(0, start + shape[d] if start < 0 else start),
        min(shape[d], end + shape[d] if end < 0 else end),
    )
    if src.target in (aten.permute.default, aten.transpose.int):
        perm = permutation(src, len(shape))

        def emit_permuted() -> Node:
            inner = emit(graph, aten.slice.Tensor, (src.args[0], perm[d], start, end), like=sl)
            return emit(graph, aten.permute.default, (inner, perm), like=src)

        return emit_permuted
    out_shape = list(shape)
    out_shape[d] = end - start
    for src_dims, dst_dims in reshape_groups(inner_shape, shape) or []:
        if d == dst_dims.start and len(src_dims) == 1:
            inner = prod(shape[d + 1 : dst_dims.stop])
            j = src_dims.start

            def emit_reshaped(j: int = j, inner: int = inner) -> Node:
                cut = emit(graph, aten.slice.Tensor, (src.args[0], j, start * inner, end * inner), like=sl)
                return emit(graph, aten.reshape.default, (cut, out_shape), like=src)

            return emit_reshaped
    return None
