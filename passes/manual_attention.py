"""Recognise attention written out by hand (bmm → scale → mask → softmax → bmm) as one SDPA node.

Many transformers do not call `F.scaled_dot_product_attention`: timm's `fused_attn=False`, Hugging Face's
"eager" attention and most hand-rolled blocks compute `softmax(q @ kᵀ * scale + mask) @ v` themselves.
After export (and our head passes) that is a `bmm` on [G, N, D] × [G, D, M], optional reshapes of the
scores to their lead shape ([B, H, N, M]), a multiply or divide by a scalar, an additive mask or a
`masked_fill(…, -inf)`, a softmax over the last dim and a second `bmm` with v. `lift_manual_attention`
replaces such a chain by the equivalent SDPA, so that `bound_attention` can split it like any other.

A chain is lifted only when every intermediate has one user (probabilities returned or reused elsewhere
must stay materialised) and its form is exactly SDPA's: the scale applied before the mask, no dtype change.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.export import ExportedProgram
from torch.fx import Node

from .graph_utils import add_constant, const_kind_of, constant_value, emit, static_shape

logger = logging.getLogger(__name__)

aten = torch.ops.aten

_SOFTMAX = (aten.softmax.int, aten._softmax.default)
_VIEWS = (aten.reshape.default, aten.view.default, aten._unsafe_view.default)
_SAME_DTYPE_COPIES = (aten._to_copy.default, aten.to.dtype, aten.clone.default)


@dataclass
class ManualAttention:
    """One matched chain: its operands as the first bmm sees them, and what lies between the two bmms."""

    scores: Node  # bmm / matmul(q [*L, N, D], kᵀ [*L, D, M])
    out: Node  # bmm / matmul(probabilities [*L', N, M], v [*L', M, Dv])
    chain: list[Node]  # scores … out, in graph order
    lead: list[int]  # the scores' leading dims where the mask meets them (prod == G)
    scale: float
    mask: Node | None
    mask_is_keep: bool  # a bool mask of the positions to keep (SDPA's convention), from masked_fill(-inf)

    @property
    def score_bytes(self) -> int:
        return self.scores.meta["val"].numel() * self.scores.meta["val"].dtype.itemsize


def _is_batched_matmul(node: object) -> bool:
    """bmm, or matmul of two tensors of one rank >= 3 with the same leading dims (no broadcasting)."""
    if not isinstance(node, Node) or node.target not in (aten.bmm.default, aten.matmul.default):
        return False
    a, b = (static_shape(x) if isinstance(x, Node) else None for x in node.args[:2])
    return a is not None and b is not None and len(a) == len(b) >= 3 and a[:-2] == b[:-2]


def _only_user(node: Node) -> Node | None:
    return next(iter(node.users)) if len(node.users) == 1 else None


def _keeps_last_two(node: Node) -> bool:
    """A view that changes only the leading dims of [*, N, M]."""
    before, after = static_shape(node.args[0]), static_shape(node)
    return before is not None and after is not None and before[-2:] == after[-2:]


def _is_same_dtype_copy(node: Node) -> bool:
    if node.target not in _SAME_DTYPE_COPIES:
        return False
    before, after = node.args[0].meta.get("val"), node.meta.get("val")
    return before is not None and after is not None and before.dtype == after.dtype


def _scalar(value: object) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def match_manual_attention(softmax: Node) -> ManualAttention | None:
    """The chain around `softmax` when it is a hand-written attention SDPA can express, else None."""
    rank = softmax.meta["val"].dim()
    if softmax.target not in _SOFTMAX or softmax.args[1] not in (-1, rank - 1):
        return None
    if softmax.target is aten._softmax.default and softmax.args[2]:
        return None  # half_to_float changes the dtype
    dtype = softmax.args[2] if softmax.target is aten.softmax.int and len(softmax.args) > 2 else None
    if dtype is not None and dtype != softmax.args[0].meta["val"].dtype:
        return None  # softmax in another precision than the scores'
    chain, scale, scaled, mask, keep, lead = [softmax], 1.0, False, None, False, None
    node = softmax.args[0]
    while True:  # walk up to the bmm that made the scores; `chain` is in reverse graph order
        if not isinstance(node, Node) or node.op != "call_function" or _only_user(node) is not chain[-1]:
            return None
        chain.append(node)
        up = node.args[0]
        if _is_batched_matmul(node):
            break
        if node.target in _VIEWS:
            if not _keeps_last_two(node):
                return None
        elif _is_same_dtype_copy(node):
            pass
        elif node.target in (aten.mul.Tensor, aten.div.Tensor) and _scalar(node.args[1]) is not None:
            factor = _scalar(node.args[1])
            scale, scaled = scale * (factor if node.target is aten.mul.Tensor else 1.0 / factor), True
        elif node.target is aten.mul.Tensor and _scalar(node.args[0]) is not None:
            scale, scaled, up = scale * _scalar(node.args[0]), True, node.args[1]
        elif node.target is aten.add.Tensor and mask is None and not scaled and len(node.args) == 2:
            # Walking up, the mask comes before any scale: in graph order the scale is applied first, as in
            # SDPA. A float mask added to the scores (either side of the add).
            if node.kwargs.get("alpha", 1) != 1:
                return None
            sides = [i for i in (0, 1) if _leads_to_bmm(node.args[i], node)]
            if len(sides) != 1:
                return None
            up, mask = node.args[sides[0]], node.args[1 - sides[0]]
            if not isinstance(mask, Node) or not mask.meta["val"].is_floating_point():
                return None
            lead = static_shape(node)[:-2]
        elif node.target is aten.masked_fill.Scalar and mask is None and not scaled:
            # masked_fill(scores, drop, -inf): SDPA's bool mask keeps the complement.
            if node.args[2] != float("-inf") or not isinstance(node.args[1], Node):
                return None
            mask, keep, lead = node.args[1], True, static_shape(node)[:-2]
        else:
            return None
        node = up
    scores = chain[-1]
    out = _walk_down_to_bmm(softmax, chain)
    if out is None:
        return None
    *score_lead, _, m = static_shape(scores)
    lead = lead if lead is not None else static_shape(softmax)[:-2]
    v_shape = static_shape(out.args[1])
    if (
        math.prod(lead) != math.prod(score_lead)
        or math.prod(v_shape[:-2]) != math.prod(lead)
        or v_shape[-2] != m
    ):
        return None
    if mask is not None and mask.meta["val"].dim() > len(lead) + 2:
        return None
    chain.reverse()
    return ManualAttention(scores, out, chain, list(lead), scale, mask, keep)


def _leads_to_bmm(node: object, user: Node) -> bool:
    """Whether `node` (read by `user` alone) comes from a bmm through single-user views, copies and scalar
    scales: the scores' side of an add, not a mask or a position bias."""
    while isinstance(node, Node) and node.op == "call_function" and _only_user(node) is user:
        if _is_batched_matmul(node):
            return True
        scalar_op = node.target in (aten.mul.Tensor, aten.div.Tensor) and _scalar(node.args[1]) is not None
        if not (node.target in (*_VIEWS, *_SAME_DTYPE_COPIES) or scalar_op):
            return False
        node, user = node.args[0], node
    return False


def _walk_down_to_bmm(softmax: Node, chain: list[Node]) -> Node | None:
    """From the softmax through views/copies to the bmm that takes the probabilities first; appended to chain
    (which is in reverse order: softmax first, so these go in front)."""
    node, below = softmax, []
    while True:
        user = _only_user(node)
        if user is None or user.op != "call_function":
            return None
        if _is_batched_matmul(user):
            if user.args[0] is not node:
                return None
            chain[:0] = [user, *reversed(below)]
            return user
        if not (user.target in _VIEWS and _keeps_last_two(user)) and not _is_same_dtype_copy(user):
            return None
        below.append(user)
        node = user


def _with_lead(graph, x: Node, lead: list[int], like: Node) -> Node:
    """x [*, R, C] as [*lead, R, C] (the same elements: only leading dims regrouped)."""
    shape = static_shape(x)
    if shape[:-2] == lead:
        return x
    return emit(graph, aten.reshape.default, (x, [*lead, *shape[-2:]]), like=like)


def _kept_positions(ep: ExportedProgram, filled: Node, like: Node) -> Node:
    """SDPA's bool mask (True = attend) from masked_fill's (True = -inf): complemented now when constant."""
    consts = const_kind_of(ep)
    if filled.op == "placeholder" and filled.name in consts:
        return add_constant(ep, ~constant_value(ep, consts[filled.name]).to(torch.bool), "_attention_keep")
    return emit(ep.graph, aten.logical_not.default, (filled,), like=like)


def lift_manual_attention(ep: ExportedProgram, wanted: Callable[[ManualAttention], bool]) -> int:
    """Replace every hand-written attention chain for which `wanted(match)` holds by one SDPA on its lead
    shape (the mask broadcasts there as it did onto the scores). Returns how many were replaced."""
    graph = ep.graph
    count = 0
    for softmax in [n for n in graph.nodes if n.op == "call_function" and n.target in _SOFTMAX]:
        found = match_manual_attention(softmax)
        if found is None or not wanted(found):
            continue
        q, kt = found.scores.args
        v = found.out.args[1]
        like = found.out
        with graph.inserting_before(found.out):
            k = emit(graph, aten.transpose.int, (kt, -2, -1), like=like)
            operands = [_with_lead(graph, x, found.lead, like) for x in (q, k, v)]
            mask = _kept_positions(ep, found.mask, like) if found.mask_is_keep else found.mask
            args = (*operands, mask) if mask is not None else tuple(operands)
            sdpa = emit(
                graph, aten.scaled_dot_product_attention.default, args, {"scale": found.scale}, like=like
            )
            out = _with_lead(graph, sdpa, static_shape(found.out)[:-2], like)
        found.out.replace_all_uses_with(out)
        for node in reversed(found.chain):
            graph.erase_node(node)
        count += 1
    return count


__all__ = ["ManualAttention", "lift_manual_attention", "match_manual_attention"]
