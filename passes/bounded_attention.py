"""Split `aten.scaled_dot_product_attention` into blocks whose score matrices fit a byte budget.

Written out as bmm + softmax (sdpa.py), an attention materialises its scores `[*lead, N, M]` and their softmax
at once; for long sequences that dominates a program's memory (it grows with the square of the sequence).
Softmax is per query row, so attending with a block of query rows (and a group of heads or batch entries) gives
exactly the rows of the full result: this pass replaces each SDPA whose score matrix exceeds `budget` bytes by
SDPAs on slices of q (rows, heads, batch) and of k, v, mask (heads, batch), concatenated back. No online
softmax, no approximation. Run it before `decompose_sdpa`, which then writes out each block; the blocks are
emitted one after the other, so a backend that plans memory by liveness (XNNPACK) reuses one block's space.

`is_causal` becomes an explicit (constant) mask, sliced per block; constant masks are sliced here, others
with `slice` nodes. Attention written out by hand (bmm → scale → mask → softmax → bmm, manual_attention.py)
whose scores exceed the budget is first taken as the SDPA it computes, then split the same way.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
from torch.export import ExportedProgram
from torch.fx import Node

from vggt_et.utils.sizes import parse_budget

from .graph_utils import (
    EmitOnce,
    PassError,
    add_constant,
    const_kind_of,
    constant_value,
    emit,
    finalize,
    static_shape,
)
from .manual_attention import lift_manual_attention
from .sdpa import SDPA_OPS, _arg

logger = logging.getLogger(__name__)

aten = torch.ops.aten

# Default for phones: 64 MiB per score matrix (its softmax needs as much again), against the gigabytes
# of a multi-view global attention written out whole.
DEFAULT_ATTENTION_BUDGET = 64 * 2**20


@dataclass(frozen=True)
class BlockPlan:
    """Per dim of the scores' leading dims + query rows: the [start, end) ranges of the blocks."""

    ranges: tuple[tuple[tuple[int, int], ...], ...]

    @property
    def blocks(self) -> int:
        return math.prod(len(r) for r in self.ranges)


def _even_ranges(size: int, most: int) -> tuple[tuple[int, int], ...]:
    """[0, size) in the fewest pieces of at most `most`, as even as possible."""
    pieces = math.ceil(size / most)
    step = math.ceil(size / pieces)
    return tuple((s, min(s + step, size)) for s in range(0, size, step))


def plan_blocks(lead: list[int], n: int, m: int, itemsize: int, budget: int) -> BlockPlan:
    """Blocks of query rows, then of the leading dims from the innermost (heads) out, so that one block's
    scores `[*lead_block, n_block, m]` take at most `budget` bytes (one row at the least)."""
    capacity = max(1, budget // (m * itemsize))  # score rows a block may hold
    ranges = []
    for size in [n, *reversed(lead)]:
        if size <= capacity:
            ranges.append(((0, size),))
            capacity //= size
        else:
            ranges.append(_even_ranges(size, capacity))
            capacity = 1
    return BlockPlan(tuple(reversed(ranges)))


def _score_bytes(q_shape: list[int], m: int, dtype: torch.dtype) -> int:
    return math.prod(q_shape[:-1]) * m * dtype.itemsize


def _slice(
    ep: ExportedProgram, once: EmitOnce, like: Node, x: Node, cuts: dict[int, tuple[int, int]]
) -> Node:
    """x sliced to `cuts` {dim: (start, end)}, outer dims first so that blocks of one head group share their
    first slice; a constant is sliced now and stored (reused when equal)."""
    shape = static_shape(x)
    cuts = {d: r for d, r in cuts.items() if r != (0, shape[d]) and shape[d] != 1}
    if not cuts:
        return x
    consts = const_kind_of(ep)
    if x.op == "placeholder" and x.name in consts:
        value = constant_value(ep, consts[x.name])
        for d, (start, end) in cuts.items():
            value = value.narrow(d, start, end - start)
        return add_constant(ep, value, "_attention_block_mask")
    for d, (start, end) in sorted(cuts.items()):
        x = once(aten.slice.Tensor, (x, d, start, end), like=like)
    return x


def _causal_mask(ep: ExportedProgram, n: int, m: int) -> Node:
    return add_constant(ep, torch.ones(n, m, dtype=torch.bool).tril(), "_attention_causal_mask")


def _rewrite(ep: ExportedProgram, node: Node, plan: BlockPlan, q, k, v, mask, scale) -> Node:
    """Emits the blocks in order (nested cats: rows innermost) and returns the node of the joined output."""
    graph = ep.graph
    rank = len(plan.ranges) + 1  # lead dims + rows + head dim
    mask_rank = 0 if mask is None else mask.meta["val"].dim()
    once = EmitOnce(graph)

    def join(level: int, chosen: tuple[tuple[int, int], ...]) -> Node:
        if level == len(plan.ranges):
            lead_cuts = {d: r for d, r in enumerate(chosen[:-1])}
            row_cut = chosen[-1]
            qb = _slice(ep, once, node, q, {**lead_cuts, rank - 2: row_cut})
            # one k, v slice per head group, shared by its row blocks
            kb, vb = _slice(ep, once, node, k, lead_cuts), _slice(ep, once, node, v, lead_cuts)
            mb = None
            if mask is not None:
                shift = rank - mask_rank  # mask dims align with the scores' from the right
                cuts = {d - shift: r for d, r in enumerate(chosen) if d - shift >= 0}
                mb = _slice(ep, once, node, mask, cuts)
            args = (qb, kb, vb) if mb is None else (qb, kb, vb, mb)
            return emit(graph, aten.scaled_dot_product_attention.default, args, {"scale": scale}, like=node)
        parts = [join(level + 1, (*chosen, r)) for r in plan.ranges[level]]
        return parts[0] if len(parts) == 1 else emit(graph, aten.cat.default, (parts, level), like=node)

    return join(0, ())


def _skip(node: Node, why: str) -> None:
    logger.warning("bound_attention: left %s whole: %s", node.name, why)


def bound_attention(
    ep: ExportedProgram, budget: int | None = DEFAULT_ATTENTION_BUDGET
) -> tuple[ExportedProgram, int]:
    """Split every SDPA whose score matrix exceeds `budget` bytes (None: no-op). Returns (program, rewrites)."""
    if budget is None:
        return ep, 0
    graph = ep.graph
    # Attention written out by hand (bmm, softmax, bmm) over the budget becomes an SDPA first, split below.
    lifted = lift_manual_attention(ep, lambda found: found.score_bytes > budget)
    if lifted:
        logger.info("bound_attention: %d hand-written attention(s) over the budget taken as SDPA", lifted)
    count = 0
    for node in [n for n in graph.nodes if n.op == "call_function" and n.target in SDPA_OPS]:
        q, k, v = node.args[:3]
        qs, ks, vs = static_shape(q), static_shape(k), static_shape(v)
        if None in (qs, ks, vs):
            _skip(node, "dynamic shapes")
            continue
        if _arg(node, 4, "dropout_p", 0.0):
            raise PassError(f"{node.name}: SDPA with dropout; export the model in eval mode")
        if _arg(node, 7, "enable_gqa", False) or qs[:-2] != ks[:-2] or ks[:-2] != vs[:-2] or len(qs) < 3:
            _skip(node, f"q, k, v need the same batch/head dims (no GQA); got {qs}, {ks}, {vs}")
            continue
        dtype = node.meta["val"].dtype
        m = ks[-2]
        if _score_bytes(qs, m, dtype) <= budget:
            continue
        mask = _arg(node, 3, "attn_mask", None)
        if mask is not None and not isinstance(mask, Node):
            _skip(node, f"attn_mask of type {type(mask).__name__}")
            continue
        scale = _arg(node, 6, "scale", None)
        scale = float(scale) if scale is not None else 1.0 / math.sqrt(qs[-1])
        with graph.inserting_before(node):
            if _arg(node, 5, "is_causal", False):
                if mask is not None:
                    raise PassError(f"{node.name}: SDPA with both attn_mask and is_causal")
                mask = _causal_mask(ep, qs[-2], m)
            # q scaled once, before slicing (the same products): the blocks then carry scale 1, which
            # decompose_sdpa writes without a multiply.
            q = emit(graph, aten.mul.Tensor, (q, scale), like=node)
            lead = qs[:-2]
            if len(lead) > 1 and (mask is None or mask.meta["val"].dim() <= 2):
                # Batch and heads flattened first ([G, N, D], as decompose_sdpa writes attention anyway):
                # one reshape per input instead of one per block, and blocks are slices of one dim.
                g = math.prod(lead)
                flat = [
                    emit(graph, aten.reshape.default, (x, [g, *static_shape(x)[-2:]]), like=node)
                    for x in (q, k, v)
                ]
                plan = plan_blocks([g], qs[-2], m, dtype.itemsize, budget)
                out = _rewrite(ep, node, plan, *flat, mask, 1.0)
                out = emit(graph, aten.reshape.default, (out, [*lead, qs[-2], vs[-1]]), like=node)
            else:
                plan = plan_blocks(lead, qs[-2], m, dtype.itemsize, budget)
                out = _rewrite(ep, node, plan, q, k, v, mask, 1.0)
        node.replace_all_uses_with(out)
        graph.erase_node(node)
        count += 1
    for name, size in (item for item in attention_intermediates(ep) if item[1] > budget):
        logger.warning("bound_attention: %s keeps %d bytes of attention scores (over the budget)", name, size)
    return finalize(ep), count


def attention_intermediates(ep: ExportedProgram) -> list[tuple[str, int]]:
    """(node name, bytes) of every attention score/probability tensor in a written-out graph: the outputs of
    `bmm` feeding a softmax, and of the softmax itself (what `bound_attention` bounds)."""
    found = []
    softmaxes = (aten._softmax.default, aten.softmax.int)
    for n in ep.graph.nodes:
        if n.op != "call_function" or n.target not in softmaxes:
            continue
        for x in (n, *n.all_input_nodes):
            val = x.meta.get("val")
            if isinstance(val, torch.Tensor):
                found.append((x.name, val.numel() * val.element_size()))
    return found


__all__ = [
    "DEFAULT_ATTENTION_BUDGET",
    "BlockPlan",
    "attention_intermediates",
    "bound_attention",
    "parse_budget",
    "plan_blocks",
]
