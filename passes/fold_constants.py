"""Fold every subgraph that depends only on weights and constants into a constant tensor.

For a fixed input shape, RoPE positions (`arange`), frequency tables, cos/sin, `embedding` gathers of constant
tables by constant indices, resized position embeddings (`_upsample_bicubic2d_aa`, which `to_edge` rejects)
and float64 sin/cos grids are all constants; computing them at run time splits delegates and wastes time.
Pure re-layouts of a weight (view/permute/slice ...) are left alone when that weight is still read
elsewhere: folding them would store the weight twice. Identical folded tensors are stored once.
Constants of every rank and dtype fold (0-d scalars such as `torch.tensor(2.0) * 3` included), and so do
tensors built with in-place writes (`mask = zeros(N, M); mask[:, k:] = -inf`): the writes run with the
rest of the constant subgraph, in graph order, and are dropped once nothing reads the tensor at run time.

Why not `executorch.exir.passes.constant_prop_pass`: it evaluates every constant node, so each transposed or
reshaped weight would be stored a second time beside the original; it skips in-place ops, so a mask
built with `mask[:, k:] = -inf` would be folded as the all-zero tensor from before the write while the write
stays at run time; it targets Edge-dialect programs (its skip lists are Edge ops) and runs before our passes
need the constants (RoPE tables before rotate-half); it does not store equal tensors once, and has no fp32
fallback for half-precision ops without a CPU kernel (bicubic-aa in fp16 exports).
"""

from __future__ import annotations

import collections
import hashlib
import logging
import operator
from typing import Any

import torch
from torch.export import ExportedProgram
from torch.fx import Node

from .graph_utils import add_constant, const_kind_of, constant_value, done, static_shape

logger = logging.getLogger(__name__)

aten = torch.ops.aten

# Ops that only re-arrange or alias data: folding a chain of them copies the weight they read.
LAYOUT_OPS = {
    aten.view.default,
    aten.reshape.default,
    aten._unsafe_view.default,
    aten.permute.default,
    aten.transpose.int,
    aten.t.default,
    aten.expand.default,
    aten.unsqueeze.default,
    aten.squeeze.dim,
    aten.squeeze.dims,
    aten.squeeze.default,
    aten.slice.Tensor,
    aten.select.int,
    aten.flatten.using_ints,
    aten.contiguous.default,
    aten.clone.default,
    aten.alias.default,
    aten.detach.default,
    aten.unflatten.int,
    aten.view_copy.default,
    aten.permute_copy.default,
    aten.expand_copy.default,
    aten.slice_copy.Tensor,
    aten.select_copy.int,
    aten.squeeze_copy.dims,
    aten.unsqueeze_copy.default,
    aten.t_copy.default,
    aten.transpose_copy.int,
    aten.split.Tensor,
    aten.split_with_sizes.default,
    aten.unbind.int,
    aten.chunk.default,
}
_SIDE_EFFECT_ONLY = {aten._assert_tensor_metadata.default}


def _is_pure_op(node: Node) -> bool:
    """Deterministic and writing into none of its inputs (in-place ops are judged by `_written_args`)."""
    target = node.target
    if node.op != "call_function":
        return False
    if target in _SIDE_EFFECT_ONLY:
        return True
    if isinstance(target, torch._ops.OpOverload):
        tags = getattr(target, "tags", ())
        return torch.Tag.nondeterministic_seeded not in tags and not target._schema.is_mutable
    return target is operator.getitem


def _schema_args(node: Node) -> list[tuple[Any, Any]]:
    """(value, schema argument) pairs of an ATen call, positional and keyword alike."""
    schema = node.target._schema
    out = []
    for i, arg in enumerate(schema.arguments):
        value = node.args[i] if i < len(node.args) else node.kwargs.get(arg.name)
        out.append((value, arg))
    return out


def _written_args(node: Node) -> list[Node]:
    """The tensors an in-place/out= op writes into (empty for pure ops and non-ATen calls)."""
    target = node.target
    if (
        node.op != "call_function"
        or not isinstance(target, torch._ops.OpOverload)
        or not target._schema.is_mutable
    ):
        return []
    return [
        v
        for v, a in _schema_args(node)
        if isinstance(v, Node) and a.alias_info is not None and a.alias_info.is_write
    ]


def _alias_roots(graph: torch.fx.Graph) -> dict[Node, Node]:
    """Node -> the node whose storage it shares: views (slice, view, permute, split's getitems ...) and
    in-place results alias their source; everything else owns its storage (is its own root)."""
    root: dict[Node, Node] = {}
    for node in graph.nodes:
        root[node] = node
        target = node.target
        if node.op != "call_function":
            continue
        if target is operator.getitem and isinstance(node.args[0], Node):
            src = node.args[0]
            if root[src] is not src or _returns_alias(src):
                root[node] = root[src]
            continue
        if not isinstance(target, torch._ops.OpOverload) or not target._schema.returns:
            continue
        ret = target._schema.returns[0].alias_info
        if ret is None:
            continue
        for v, a in _schema_args(node):
            if isinstance(v, Node) and a.alias_info is not None and a.alias_info.before_set & ret.before_set:
                root[node] = root[v]
                break
    return root


def _returns_alias(node: Node) -> bool:
    target = node.target
    return (
        isinstance(target, torch._ops.OpOverload)
        and bool(target._schema.returns)
        and target._schema.returns[0].alias_info is not None
    )


def _materialize(args: Any, values: dict[Node, Any]) -> Any:
    return torch.fx.node.map_arg(args, lambda n: values[n])


def _digest(t: torch.Tensor) -> tuple:
    """Shape, dtype and a hash of the bytes; flattened first so 0-d tensors and every dtype can be viewed."""
    data = t.detach().contiguous().reshape(-1).view(torch.uint8)
    return (tuple(t.shape), t.dtype, hashlib.sha1(data.numpy().tobytes()).hexdigest())


def _constant_nodes(ep: ExportedProgram, consts: dict, root: dict[Node, Node]) -> dict[Node, bool]:
    """Which nodes compute the same value on every run, in-place writes included.

    An in-place op is constant when it only writes into a tensor computed from constants (a mask built with
    `zeros(...)[:, k:] = -inf`); the tensor it writes into then counts as constant only if every run-time
    reader of it comes after the last write, so folding the final value is exact. Writes into weights or
    inputs, and families read at run time between two writes, stay at run time whole (`poisoned`).
    """
    graph = ep.graph
    order = {n: i for i, n in enumerate(graph.nodes)}
    family: dict[Node, list[Node]] = collections.defaultdict(list)
    for node, r in root.items():
        family[r].append(node)
    writes = {n: _written_args(n) for n in graph.nodes}
    poisoned: set[Node] = set()
    while True:
        is_const: dict[Node, bool] = {}
        for node in graph.nodes:
            if root[node] in poisoned:
                is_const[node] = False
            elif node.op == "placeholder":
                is_const[node] = node.name in consts
            elif node.op != "call_function":
                is_const[node] = False
            else:
                inputs_const = all(is_const.get(i, False) for i in node.all_input_nodes)
                if writes[node]:
                    is_const[node] = inputs_const and all(root[w].op == "call_function" for w in writes[node])
                else:
                    is_const[node] = inputs_const and _is_pure_op(node)
        newly: set[Node] = set()
        for node, written in writes.items():
            for w in written:
                r = root[w]
                if r in poisoned:
                    continue
                if not is_const[node]:
                    newly.add(r)
                    continue
                last_write = max(order[m] for m in family[r] if writes[m])
                first_runtime_read = min(
                    (order[u] for m in family[r] for u in m.users if not is_const.get(u, False)),
                    default=len(order),
                )
                if first_runtime_read < last_write:
                    newly.add(r)
        if not newly:
            return is_const
        poisoned |= newly


def fold_constants(ep: ExportedProgram) -> tuple[ExportedProgram, int]:
    """Returns (program, number of folded tensors). `ep` is edited in place; pass a copy to keep it."""
    graph = ep.graph
    consts = const_kind_of(ep)
    root = _alias_roots(graph)
    is_const = _constant_nodes(ep, consts, root)

    # Side-effect-only asserts on constants: drop them (nothing reads them).
    erased = 0
    for node in list(graph.nodes):
        if node.op == "call_function" and node.target in _SIDE_EFFECT_ONLY and is_const[node]:
            graph.erase_node(node)
            erased += 1

    # Fold targets: constant computed tensors read by run-time nodes (or returned).
    targets = [
        n
        for n in graph.nodes
        if n.op == "call_function"
        and is_const[n]
        and isinstance(n.meta.get("val"), torch.Tensor)
        and any(not is_const.get(u, False) for u in n.users)
    ]
    chosen = [
        t for t in targets if static_shape(t) is not None and not _pure_relayout_of_shared_weight(t, is_const)
    ]
    if not chosen:
        return done(ep, erased)
    values, failed = _evaluate(ep, consts, root, chosen)

    seen: dict[tuple, Node] = {}
    folded = 0
    for target in chosen:
        if target in failed:
            continue
        folded += 1
        tensor = values[target].detach().clone().contiguous()
        key = _digest(tensor)
        if key not in seen:
            seen[key] = add_constant(ep, tensor)
            for k in ("stack_trace", "nn_module_stack"):
                if k in target.meta:
                    seen[key].meta[k] = target.meta[k]
        target.replace_all_uses_with(seen[key])
    values.clear()
    _erase_dead_writes(graph, root)
    return done(ep, folded + erased)


def _evaluate(
    ep: ExportedProgram, consts: dict, root: dict[Node, Node], chosen: list[Node]
) -> tuple[dict[Node, Any], set[Node]]:
    """Run the constant cones of `chosen` in graph order, with the in-place writes into them, on real
    tensors. Returns the values and the nodes that could not be computed (left to run time, with why)."""
    graph = ep.graph
    writers: dict[Node, list[Node]] = collections.defaultdict(list)
    for node in graph.nodes:
        for w in _written_args(node):
            writers[root[w]].append(node)
    needed: set[Node] = set()
    stack = list(chosen)
    while stack:
        node = stack.pop()
        if node in needed:
            continue
        needed.add(node)
        stack.extend(node.all_input_nodes)
        stack.extend(writers.get(root[node], ()))
    values: dict[Node, Any] = {}
    failed: set[Node] = set()
    for node in graph.nodes:
        if node not in needed:
            continue
        if any(i in failed for i in node.all_input_nodes):
            failed.add(node)
            continue
        if node.op == "placeholder":
            values[node] = constant_value(ep, consts[node.name])
            continue
        try:
            values[node] = _run(node, _materialize(node.args, values), _materialize(node.kwargs, values))
        except (RuntimeError, NotImplementedError) as e:  # leave it to run time, say why
            logger.warning("fold_constants: cannot evaluate %s (%s): %s", node.name, node.target, e)
            failed.add(node)
            if _written_args(node):  # a failed write makes every value of that tensor unknown
                r = root[_written_args(node)[0]]
                failed.update(n for n in needed if root[n] is r)
    return values, failed


def _erase_dead_writes(graph: torch.fx.Graph, root: dict[Node, Node]) -> None:
    """Drop in-place writes into tensors nobody reads any more (their readers were folded); dead-code
    elimination keeps them otherwise, as it must for writes in general."""
    graph.eliminate_dead_code()  # the folded readers first; it keeps every in-place op, as it must in general
    members: dict[Node, set[Node]] = collections.defaultdict(set)
    for node, r in root.items():
        members[r].add(node)
    for node in reversed(list(graph.nodes)):  # last write first: chained writes read each other
        written = _written_args(node)
        if not written or node.users:
            continue
        family = members[root[written[0]]]
        if all(u in family for m in family for u in m.users):
            graph.erase_node(node)


def _run(node: Node, args: Any, kwargs: Any) -> Any:
    """Run one op on real tensors; half-precision ops without a CPU kernel (e.g. bicubic-aa) run in fp32."""
    with torch.no_grad():
        try:
            return node.target(*args, **kwargs)
        except (RuntimeError, NotImplementedError):
            low = (torch.float16, torch.bfloat16)

            def up(t: Any) -> Any:
                return t.float() if isinstance(t, torch.Tensor) and t.dtype in low else t

            out = node.target(
                *torch.utils._pytree.tree_map(up, args), **torch.utils._pytree.tree_map(up, kwargs)
            )
            want = node.meta.get("val")
            if isinstance(out, torch.Tensor) and isinstance(want, torch.Tensor):
                return out.to(want.dtype)
            return out


def _pure_relayout_of_shared_weight(target: Node, is_const: dict[Node, bool]) -> bool:
    """True when `target` is only layout ops over weights, and one of those weights is read elsewhere."""
    cone: set[Node] = set()
    stack = [target]
    placeholders: list[Node] = []
    while stack:
        node = stack.pop()
        if node in cone:
            continue
        cone.add(node)
        if node.op == "placeholder":
            placeholders.append(node)
            continue
        is_getitem = getattr(node.target, "__name__", "") == "getitem"
        if node.target not in LAYOUT_OPS and not is_getitem:
            return False
        stack.extend(node.all_input_nodes)
    if not placeholders:
        return False
    return any(any(u not in cone for u in p.users) for p in placeholders)
