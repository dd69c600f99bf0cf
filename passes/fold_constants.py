"""Fold every subgraph that depends only on weights and constants into a constant tensor.

For a fixed input shape, RoPE positions (`arange`), frequency tables, cos/sin, `embedding` gathers of constant
tables by constant indices, resized position embeddings (`_upsample_bicubic2d_aa`, which `to_edge` rejects)
and float64 sin/cos grids are all constants; computing them at run time splits delegates and wastes time.
Pure re-layouts of a weight (view/permute/slice ...) are left alone when that weight is still read
elsewhere: folding them would store the weight twice. Identical folded tensors are stored once.
"""

from __future__ import annotations

import hashlib
import sys
from typing import Any

import torch
from torch.export import ExportedProgram
from torch.fx import Node

from .graph_utils import add_constant, const_kind_of, constant_value, finalize, static_shape

aten = torch.ops.aten

# Ops that only re-arrange or alias data: folding a chain of them copies the weight they read.
LAYOUT_OPS = {
    aten.view.default, aten.reshape.default, aten._unsafe_view.default, aten.permute.default,
    aten.transpose.int, aten.t.default, aten.expand.default, aten.unsqueeze.default,
    aten.squeeze.dim, aten.squeeze.dims, aten.squeeze.default, aten.slice.Tensor, aten.select.int,
    aten.flatten.using_ints, aten.contiguous.default, aten.clone.default, aten.alias.default,
    aten.detach.default, aten.unflatten.int, aten.view_copy.default, aten.permute_copy.default,
    aten.expand_copy.default, aten.slice_copy.Tensor, aten.select_copy.int, aten.squeeze_copy.dims,
    aten.unsqueeze_copy.default, aten.t_copy.default, aten.transpose_copy.int, aten.split.Tensor,
    aten.split_with_sizes.default, aten.unbind.int, aten.chunk.default,
}
_SIDE_EFFECT_ONLY = {aten._assert_tensor_metadata.default}


def _is_foldable_op(node: Node) -> bool:
    target = node.target
    if node.op != "call_function":
        return False
    if target in _SIDE_EFFECT_ONLY:
        return True
    if isinstance(target, torch._ops.OpOverload):
        tags = getattr(target, "tags", ())
        if torch.Tag.nondeterministic_seeded in tags or target._schema.is_mutable:
            return False
        return True
    return target.__name__ == "getitem" if hasattr(target, "__name__") else False


def _node_inputs(node: Node) -> list[Node]:
    return list(node.all_input_nodes)


def _materialize(args: Any, values: dict[Node, Any]) -> Any:
    return torch.fx.node.map_arg(args, lambda n: values[n])


def _digest(t: torch.Tensor) -> tuple:
    data = t.detach().contiguous().view(torch.uint8) if t.numel() else t.detach()
    return (tuple(t.shape), t.dtype, hashlib.sha1(data.numpy().tobytes()).hexdigest())


def fold_constants(ep: ExportedProgram) -> tuple[ExportedProgram, int]:
    """Returns (program, number of folded tensors). `ep` is edited in place; pass a copy to keep it."""
    graph = ep.graph
    consts = const_kind_of(ep)
    is_const: dict[Node, bool] = {}
    for node in graph.nodes:
        if node.op == "placeholder":
            is_const[node] = node.name in consts
        elif node.op == "call_function":
            is_const[node] = _is_foldable_op(node) and all(is_const.get(i, False) for i in _node_inputs(node))
        else:
            is_const[node] = False

    # Side-effect-only asserts on constants: drop them (nothing reads them).
    for node in list(graph.nodes):
        if node.op == "call_function" and node.target in _SIDE_EFFECT_ONLY and is_const[node]:
            graph.erase_node(node)

    # Fold targets: constant computed tensors read by run-time nodes (or returned).
    targets = [
        n for n in graph.nodes
        if n.op == "call_function" and is_const[n] and isinstance(n.meta.get("val"), torch.Tensor)
        and any(not is_const.get(u, False) for u in n.users)
    ]
    chosen = [
        t for t in targets if static_shape(t) is not None and not _pure_relayout_of_shared_weight(t, is_const)
    ]
    if not chosen:
        return finalize(ep), 0

    values: dict[Node, Any] = {}

    def evaluate(node: Node) -> Any:
        stack = [node]
        while stack:
            cur = stack[-1]
            if cur in values:
                stack.pop()
                continue
            pending = [i for i in _node_inputs(cur) if i not in values]
            if pending:
                stack.extend(pending)
                continue
            stack.pop()
            if cur.op == "placeholder":
                values[cur] = constant_value(ep, consts[cur.name])
            else:
                values[cur] = _run(cur, _materialize(cur.args, values), _materialize(cur.kwargs, values))
        return values[node]

    seen: dict[tuple, Node] = {}
    folded = 0
    for target in chosen:
        try:
            tensor = evaluate(target)
        except (RuntimeError, NotImplementedError) as e:  # leave it to run time, say why
            print(f"fold_constants: cannot evaluate {target.name} ({target.target}): {e}", file=sys.stderr)
            continue
        folded += 1
        tensor = tensor.detach().clone().contiguous()
        key = _digest(tensor)
        if key not in seen:
            seen[key] = add_constant(ep, tensor)
            for k in ("stack_trace", "nn_module_stack"):
                if k in target.meta:
                    seen[key].meta[k] = target.meta[k]
        target.replace_all_uses_with(seen[key])
    values.clear()
    return finalize(ep), folded


def _run(node: Node, args: Any, kwargs: Any) -> Any:
    """Run one op on real tensors; half-precision ops without a CPU kernel (e.g. bicubic-aa) run in fp32."""
    with torch.no_grad():
        try:
            return node.target(*args, **kwargs)
        except (RuntimeError, NotImplementedError):
            low = (torch.float16, torch.bfloat16)

            def up(t: Any) -> Any:
                return t.float() if isinstance(t, torch.Tensor) and t.dtype in low else t

            out = node.target(*torch.utils._pytree.tree_map(up, args), **torch.utils._pytree.tree_map(up, kwargs))
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
