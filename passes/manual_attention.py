"""Recognise attention written out by hand (q·kᵀ → scale → mask → softmax → ·v) as one SDPA node.

Many transformers do not call `F.scaled_dot_product_attention`: timm's `fused_attn=False`, Hugging Face's
"eager" attention, `nn.MultiheadAttention` asked for its weights, and most hand-rolled blocks compute
`softmax(q @ kᵀ * scale + mask) @ v` themselves. In an exported graph that is a batched product (`bmm`,
`matmul`, a two-operand `einsum`, or `baddbmm` with the mask as its addend) giving the scores, optional
reshapes of the scores' leading dims, a multiply or divide by a scalar, an additive float mask or a
`masked_fill(…, -inf)`, a softmax over the last dim, and a second product with v.
`lift_manual_attention` replaces such a chain by the equivalent SDPA, so that `bound_attention` can split
it like any other.

A chain is lifted only when every intermediate has one user (probabilities returned or reused elsewhere
must stay materialised) and its form is exactly SDPA's: the scale applied before the mask, no dtype change.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.export import ExportedProgram
from torch.fx import Node

from .graph_utils import add_constant, const_kind_of, constant_value, emit, static_shape

aten = torch.ops.aten

_SOFTMAX = (aten.softmax.int, aten._softmax.default)
_VIEWS = (aten.reshape.default, aten.view.default, aten._unsafe_view.default)
_SAME_DTYPE_COPIES = (aten._to_copy.default, aten.to.dtype, aten.clone.default)


@dataclass(frozen=True)
class Product:
    """A batched matrix product `a @ b` (b given transposed, `a @ bᵀ`, when `b_transposed`), same batch dims."""

    a: Node
    b: Node
    b_transposed: bool


def _einsum_product(node: Node) -> Product | None:
    """'…ik,…jk->…ij' (b transposed) or '…ik,…kj->…ij': the same batch letters in the same order, or a
    leading '...' on all three terms (batch dims equal: checked on the shapes)."""
    equation, operands = node.args[0], node.args[1]
    if not isinstance(equation, str) or len(operands) != 2:
        return None
    match = re.fullmatch(r"([\w.]+),([\w.]+)->([\w.]+)", equation.replace(" ", ""))
    if match is None:
        return None
    terms = match.groups()
    if all(t.startswith("...") for t in terms):
        terms, least = tuple(t[3:] for t in terms), 2
    else:
        least = 3
    x, y, z = terms
    if "." in x + y + z or not (len(x) == len(y) == len(z) >= least and x[:-2] == y[:-2] == z[:-2]):
        return None
    (i, k), j = x[-2:], z[-1]
    if len(set(x + y)) != len(x) + 1 or z[-2] != i or j in x:
        return None
    if y[-2:] == j + k:
        return Product(operands[0], operands[1], True)
    return Product(operands[0], operands[1], False) if y[-2:] == k + j else None


def batched_product(node: object) -> Product | None:
    """The product a `bmm`, `matmul` (equal ranks >= 3, equal batch dims: no broadcasting) or two-operand
    `einsum` computes, else None."""
    if not isinstance(node, Node) or node.op != "call_function":
        return None
    if node.target is aten.einsum.default:
        found = _einsum_product(node)
    elif node.target in (aten.bmm.default, aten.matmul.default):
        found = Product(node.args[0], node.args[1], False)
    else:
        return None
    if found is None or not all(isinstance(x, Node) for x in (found.a, found.b)):
        return None
    a, b = static_shape(found.a), static_shape(found.b)
    return found if a is not None and b is not None and len(a) == len(b) >= 3 and a[:-2] == b[:-2] else None


def _baddbmm_product(node: Node) -> tuple[Product, Node] | None:
    """baddbmm(mask, q, kᵀ) with beta = alpha = 1: the scores plus an additive mask (nn.MultiheadAttention)."""
    if (
        node.target is not aten.baddbmm.default
        or node.kwargs.get("beta", 1) != 1
        or node.kwargs.get("alpha", 1) != 1
    ):
        return None
    mask, a, b = node.args[:3]
    if len(node.args) > 3 or not isinstance(mask, Node) or not mask.meta["val"].is_floating_point():
        return None
    return Product(a, b, False), mask


@dataclass
class ManualAttention:
    """One matched chain: the products at its ends and what it computes between them."""

    scores: Node  # q·kᵀ [*L, N, M]
    qk: Product
    out: Node  # probabilities · v [*L', N, Dv]
    pv: Product
    chain: list[Node]  # scores … out, in graph order
    lead: list[int]  # the scores' leading dims where the mask meets them
    scale: float
    mask: Node | None
    mask_is_keep: bool  # a bool mask of the positions to keep (SDPA's convention), from masked_fill(-inf)

    @property
    def score_bytes(self) -> int:
        return self.scores.meta["val"].numel() * self.scores.meta["val"].dtype.itemsize


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


def _softmax_in_place(softmax: Node) -> bool:
    """A softmax over the last dim that keeps the scores' dtype."""
    if softmax.target not in _SOFTMAX:
        return False
    if softmax.args[1] not in (-1, softmax.meta["val"].dim() - 1):
        return False
    if softmax.target is aten._softmax.default:
        return not softmax.args[2]  # half_to_float
    dtype = softmax.args[2] if len(softmax.args) > 2 else softmax.kwargs.get("dtype")
    return dtype is None or dtype == softmax.args[0].meta["val"].dtype


def match_manual_attention(softmax: Node) -> ManualAttention | None:
    """The chain around `softmax` when it is a hand-written attention SDPA can express, else None."""
    if not _softmax_in_place(softmax):
        return None
    chain, scale, scaled, mask, keep, lead = [softmax], 1.0, False, None, False, None
    node, qk = softmax.args[0], None
    while qk is None:  # walk up to the product that made the scores; `chain` is in reverse graph order
        if not isinstance(node, Node) or node.op != "call_function" or _only_user(node) is not chain[-1]:
            return None
        chain.append(node)
        up = node.args[0]
        if (qk := batched_product(node)) is not None:
            break
        if (with_mask := _baddbmm_product(node)) is not None:
            if mask is not None or scaled:  # a second mask, or a scale applied to the mask too
                return None
            qk, mask = with_mask
            lead = static_shape(node)[:-2]
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
            sides = [i for i in (0, 1) if _is_scores_side(node.args[i], node)]
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
    found = _walk_down_to_product(softmax, chain)
    if found is None:
        return None
    out, pv = found
    lead = lead if lead is not None else static_shape(softmax)[:-2]
    m = static_shape(scores)[-1]
    v_shape = static_shape(pv.b)
    v_lead, v_rows = (v_shape[:-2], v_shape[-1] if pv.b_transposed else v_shape[-2])
    if math.prod(lead) != math.prod(static_shape(scores)[:-2]) or math.prod(v_lead) != math.prod(lead):
        return None
    if v_rows != m or (mask is not None and mask.meta["val"].dim() > len(lead) + 2):
        return None
    chain.reverse()
    return ManualAttention(scores, qk, out, pv, chain, list(lead), scale, mask, keep)


def _is_scores_side(node: object, user: Node) -> bool:
    """Whether `node` (read by `user` alone) comes from a product through single-user views, copies and
    scalar scales: the scores' side of an add, not a mask or a position bias."""
    while isinstance(node, Node) and node.op == "call_function" and _only_user(node) is user:
        if batched_product(node) is not None:
            return True
        scalar_op = node.target in (aten.mul.Tensor, aten.div.Tensor) and _scalar(node.args[1]) is not None
        if not (node.target in (*_VIEWS, *_SAME_DTYPE_COPIES) or scalar_op):
            return False
        node, user = node.args[0], node
    return False


def _walk_down_to_product(softmax: Node, chain: list[Node]) -> tuple[Node, Product] | None:
    """From the softmax through views/copies to the product that takes the probabilities as its left
    operand; those nodes go in front of `chain` (which is in reverse graph order)."""
    node, below = softmax, []
    while True:
        user = _only_user(node)
        if user is None or user.op != "call_function":
            return None
        if (pv := batched_product(user)) is not None:
            if pv.a is not node or pv.b is node:
                return None
            chain[:0] = [user, *reversed(below)]
            return user, pv
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


def _transposed(graph, x: Node, transpose: bool, like: Node) -> Node:
    return emit(graph, aten.transpose.int, (x, -2, -1), like=like) if transpose else x


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
        like = found.out
        with graph.inserting_before(found.out):
            q = found.qk.a
            k = _transposed(graph, found.qk.b, not found.qk.b_transposed, like)  # scores = q @ kᵀ
            v = _transposed(graph, found.pv.b, found.pv.b_transposed, like)
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


__all__ = ["ManualAttention", "Product", "batched_product", "lift_manual_attention", "match_manual_attention"]
