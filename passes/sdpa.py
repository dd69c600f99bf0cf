"""Rewrite `aten.scaled_dot_product_attention` into explicit 3-D `bmm` + softmax.

ExecuTorch's default SDPA decomposition adds "safe softmax" masking ops (`any/eq/where/logical_not/
full_like`) and 4-D broadcast matmuls with `expand_copy`, none of which XNNPACK takes, so each attention
splits the delegate. Written out as bmm(q*scale, kᵀ) → (+mask) → softmax → bmm(·, v) over flattened batch
and head dims, the whole attention is delegated. `split_heads=True` emits one single-head attention per head
(rank ≤ 3 matmuls), which Qualcomm's HTP prefers.

Numerics: masks become additive (`-inf` where a bool mask is False, `is_causal` → lower-triangular), so a
query row that is masked out entirely yields NaN instead of PyTorch's zeros; scaling q before the matmul
differs from PyTorch's kernel only by float rounding.
"""

from __future__ import annotations

import logging
import math

import torch
from torch.export import ExportedProgram
from torch.fx import Node

from .graph_utils import (
    EmitOnce,
    PassError,
    add_constant,
    const_kind_of,
    constant_value,
    done,
    emit,
    filled_constant,
    prod,
    static_shape,
)

logger = logging.getLogger(__name__)

aten = torch.ops.aten
SDPA_OPS = (aten.scaled_dot_product_attention.default,)


def _arg(node: Node, index: int, name: str, default):
    if len(node.args) > index:
        return node.args[index]
    return node.kwargs.get(name, default)


def _additive_mask(ep: ExportedProgram, node: Node, mask, n: int, m: int, dtype: torch.dtype, causal: bool):
    """The mask as a float node to add to the scores (or None): constants are computed now."""
    graph = ep.graph
    if causal:
        tri = torch.ones(n, m, dtype=torch.bool).tril()
        return add_constant(ep, filled_constant(~tri, float("-inf"), dtype), "_sdpa_causal_mask")
    if mask is None:
        return None
    if not isinstance(mask, Node):
        raise PassError(f"{node.name}: attn_mask of type {type(mask).__name__} is not supported")
    mval = mask.meta["val"]
    if mval.dtype != torch.bool:
        if mval.dtype != dtype:
            return emit(graph, aten._to_copy.default, (mask,), {"dtype": dtype}, like=node)
        return mask
    consts = const_kind_of(ep)
    if mask.op == "placeholder" and mask.name in consts:
        data = constant_value(ep, consts[mask.name])
        return add_constant(ep, filled_constant(~data, float("-inf"), dtype), "_sdpa_mask")
    additive = emit(graph, aten.where.Scalar, (mask, 0.0, float("-inf")), like=node)  # float32
    if dtype != additive.meta["val"].dtype:
        additive = emit(graph, aten._to_copy.default, (additive,), {"dtype": dtype}, like=node)
    return additive


def _attend(
    ep: ExportedProgram,
    node: Node,
    q: Node,
    k: Node,
    v: Node,
    scale: float,
    mask: Node | None,
    once: EmitOnce,
) -> Node:
    """bmm attention on 3-D q [G, N, D], k [G, M, D], v [G, M, Dv] → [G, N, Dv]. A scale of 1 (bounded
    attention pre-scales q) emits no multiply; kᵀ is emitted once per k (the blocks of one attention share it)."""
    g = ep.graph
    qs = q if scale == 1.0 else emit(g, aten.mul.Tensor, (q, scale), like=node)
    kt = once(aten.transpose.int, (k, 1, 2), like=node)
    scores = emit(g, aten.bmm.default, (qs, kt), like=node)
    if mask is not None:
        scores = emit(g, aten.add.Tensor, (scores, mask), like=node)
    attn = emit(g, aten._softmax.default, (scores, -1, False), like=node)
    return emit(g, aten.bmm.default, (attn, v), like=node)


def _reshaped(once: EmitOnce, like: Node, x: Node, shape: list[int]) -> Node:
    """x as `shape`: no node when it has that shape already (bounded attention's blocks come in 3-D)."""
    return x if static_shape(x) == shape else once(aten.reshape.default, (x, shape), like=like)


def _skip(node: Node, why: str) -> None:
    """Forms the rewrite does not cover stay as SDPA (the audit reports them) instead of failing the build."""
    logger.warning("decompose_sdpa: left %s as is: %s", node.name, why)


def decompose_sdpa(ep: ExportedProgram, split_heads: bool = False) -> tuple[ExportedProgram, int]:
    """Replace every SDPA with bmm/softmax (per head with `split_heads`). Returns (program, rewrites)."""
    graph = ep.graph
    count = 0
    once = EmitOnce(graph)
    for node in [n for n in graph.nodes if n.op == "call_function" and n.target in SDPA_OPS]:
        q, k, v = node.args[:3]
        mask = _arg(node, 3, "attn_mask", None)
        dropout = _arg(node, 4, "dropout_p", 0.0)
        causal = _arg(node, 5, "is_causal", False)
        scale = _arg(node, 6, "scale", None)
        gqa = _arg(node, 7, "enable_gqa", False)
        qs, ks, vs = static_shape(q), static_shape(k), static_shape(v)
        if None in (qs, ks, vs):
            _skip(node, "dynamic shapes (export with static shapes to rewrite it)")
            continue
        if dropout:
            raise PassError(f"{node.name}: SDPA with dropout_p={dropout}; export the model in eval mode")
        if gqa or qs[:-2] != ks[:-2] or ks[:-2] != vs[:-2] or len(qs) < 3:
            _skip(node, f"q, k, v need the same batch/head dims (no GQA); got {qs}, {ks}, {vs}")
            continue
        lead, n, d = qs[:-2], qs[-2], qs[-1]
        m, dv = ks[-2], vs[-1]
        dtype = node.meta["val"].dtype
        scale = float(scale) if scale is not None else 1.0 / math.sqrt(d)
        with graph.inserting_before(node):
            add_mask = _additive_mask(ep, node, mask, n, m, dtype, bool(causal))
        mask_rank = 0 if add_mask is None else add_mask.meta["val"].dim()
        if mask_rank > len(qs):
            raise PassError(f"{node.name}: attn_mask of rank {mask_rank} does not broadcast to {len(qs)}-D q")
        with graph.inserting_before(node):
            if add_mask is not None and mask_rank > 2:
                # Broadcast the mask to the scores' full shape once; grouped to [G, N, M] like the scores.
                full = emit(graph, aten.expand.default, (add_mask, [*lead, n, m]), like=node)
                add_mask = emit(graph, aten.reshape.default, (full, [prod(lead), n, m]), like=node)
            if split_heads and len(lead) == 2 and lead[1] > 1:
                out = _per_head(ep, node, q, k, v, lead, n, m, d, dv, scale, add_mask, once)
            else:
                g3 = [prod(lead)]
                q3 = _reshaped(once, node, q, g3 + [n, d])
                k3 = _reshaped(once, node, k, g3 + [m, d])
                v3 = _reshaped(once, node, v, g3 + [m, dv])
                o3 = _attend(ep, node, q3, k3, v3, scale, add_mask, once)
                out = _reshaped(once, node, o3, [*lead, n, dv])
        node.replace_all_uses_with(out)
        graph.erase_node(node)
        count += 1
    return done(ep, count)


def _per_head(ep, node, q, k, v, lead, n, m, d, dv, scale, add_mask, once: EmitOnce) -> Node:
    """One attention per head of [B, H, N, D] inputs, each on [B, N, D] slices, re-joined on dim 1."""
    g = ep.graph
    b, heads = lead
    outs = []
    for h in range(heads):

        def head(x: Node, rows: int, cols: int, h: int = h) -> Node:
            sl = emit(g, aten.slice.Tensor, (x, 1, h, h + 1), like=node)
            return emit(g, aten.reshape.default, (sl, [b, rows, cols]), like=node)

        mask_h = add_mask
        if add_mask is not None and add_mask.meta["val"].dim() == 3 and add_mask.meta["val"].shape[0] != 1:
            # [B*H, N, M] mask from the broadcast above: rows h, h+H, ... belong to head h.
            full = emit(g, aten.reshape.default, (add_mask, [b, heads, n, m]), like=node)
            mask_h = head(full, n, m)
        o = _attend(ep, node, head(q, n, d), head(k, m, d), head(v, m, dv), scale, mask_h, once)
        outs.append(emit(g, aten.reshape.default, (o, [b, 1, n, dv]), like=node))
    return emit(g, aten.cat.default, (outs, 1), like=node)
