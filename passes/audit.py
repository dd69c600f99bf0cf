"""Op-coverage audit: which ops a program has before/after the passes, and which ones a backend delegates.

`audit_program` returns the dict of the audit JSON contract in ARCHITECTURE.md (the caller adds "preset");
`format_audit` renders it as a table. For `qnn` no partitioner can run without the Qualcomm SDK, so the
audit reports what the HTP cares about instead: op counts, the largest tensor rank any compute op touches,
and whether an SDPA survives.
"""

from __future__ import annotations

import collections
import logging
import time
from typing import Any

import torch
from torch.export import ExportedProgram
from torch.fx import Graph

from vggt_et.utils.tables import format_table

from .manager import BACKENDS, apply_with_report

logger = logging.getLogger(__name__)

# Nodes that move no data and compute nothing: never counted as (non-)delegated compute.
_BOOKKEEPING = {
    "getitem",
    "executorch_call_delegate",
    "aten._assert_tensor_metadata.default",
    "aten.sym_size.int",
    "aten._assert_scalar.default",
    "aten.sym_constrain_range_for_size.default",
}


def op_name(target: Any) -> str:
    """'aten.linear.default' for ATen and Edge ops alike; the function name for Python callables."""
    inner = getattr(target, "_op", None)  # EdgeOpOverload wraps the ATen overload
    if isinstance(inner, torch._ops.OpOverload):
        target = inner
    if isinstance(target, torch._ops.OpOverload):
        return str(target)
    return getattr(target, "__name__", str(target))


def count_ops(graph: Graph) -> dict[str, int]:
    """Call counts per op of one graph (not descending into delegates), sorted by name."""
    counts = collections.Counter(op_name(n.target) for n in graph.nodes if n.op == "call_function")
    return dict(sorted(counts.items()))


def _is_compute(name: str) -> bool:
    return name not in _BOOKKEEPING


_RESHAPES = {
    "aten.reshape.default",
    "aten.view.default",
    "aten._unsafe_view.default",
    "aten.view_copy.default",
}


def max_compute_rank(graph: Graph) -> int:
    """Largest rank among the inputs and outputs of compute ops (QNN HTP wants at most 4).

    Reshapes are not counted: they only relabel memory, and a rank-5 program input or output ([B, S, 3, H, W]
    images) can only ever be reshaped.
    """
    best = 0
    for node in graph.nodes:
        name = op_name(node.target)
        if node.op != "call_function" or not _is_compute(name) or name in _RESHAPES:
            continue
        vals = [node.meta.get("val")] + [i.meta.get("val") for i in node.all_input_nodes]
        for v in vals:
            for t in v if isinstance(v, (list, tuple)) else [v]:
                if isinstance(t, torch.Tensor):
                    best = max(best, t.dim())
    return best


def _delegated_ops(lowered_graph: Graph, owner: torch.nn.Module) -> collections.Counter:
    counts: collections.Counter = collections.Counter()
    for node in lowered_graph.nodes:
        if node.op == "call_function" and op_name(node.target) == "executorch_call_delegate":
            module = getattr(owner, node.args[0].target)
            original = getattr(module, "original_module", None)
            if original is not None:
                for name, c in count_ops(original.graph).items():
                    counts[name] += c
    return counts


def lower_xnnpack(ep: ExportedProgram):
    """`to_edge_transform_and_lower` with XNNPACK's configs (imported lazily: slow to import), partitioned
    in linear memory (partitioning.py)."""
    from executorch.exir import to_edge_transform_and_lower

    from .partitioning import lean_xnnpack_partitioner

    return to_edge_transform_and_lower(ep, partitioner=[lean_xnnpack_partitioner()])


def coverage(lowered_ep: ExportedProgram) -> dict[str, Any]:
    """Per-op delegation of a lowered program: ops, non_delegated, delegated_fraction, delegate_segments."""
    graph = lowered_ep.graph
    outside = {k: v for k, v in count_ops(graph).items() if _is_compute(k)}
    inside = {k: v for k, v in _delegated_ops(graph, lowered_ep.graph_module).items() if _is_compute(k)}
    ops = collections.Counter(outside)
    ops.update(inside)
    n_in, n_out = sum(inside.values()), sum(outside.values())
    segments = sum(
        1 for n in graph.nodes if n.op == "call_function" and op_name(n.target) == "executorch_call_delegate"
    )
    return {
        "ops": dict(sorted(ops.items())),
        "delegated_ops": dict(sorted(inside.items())),
        "non_delegated": dict(sorted(outside.items())),
        "delegated_fraction": (n_in / (n_in + n_out)) if n_in + n_out else 1.0,
        "delegate_segments": segments,
    }


def audit_program(
    ep: ExportedProgram,
    backend: str,
    input_shape: list[int] | None = None,
    *,
    run_passes: bool = True,
    progress: bool = True,
) -> dict[str, Any]:
    """Audit `ep` for `backend` (one of BACKENDS). `ep` is not modified."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if input_shape is None:
        user = [n for n in ep.graph.nodes if n.op == "placeholder"][-1:]
        input_shape = list(user[0].meta["val"].shape) if user else []
    report: dict[str, Any] = {"backend": backend, "input_shape": [int(s) for s in input_shape]}
    report["before"] = {"ops": count_ops(ep.graph)}
    t0 = time.perf_counter()
    if run_passes:
        ep, pass_reports = apply_with_report(ep, backend, progress=progress)
    else:
        pass_reports = []
    report["passes"] = [
        {
            "name": r.name,
            "changed": r.changed,
            "nodes_before": r.nodes_before,
            "nodes_after": r.nodes_after,
            "matches": r.matches,
        }
        for r in pass_reports
    ]
    report["pass_seconds"] = time.perf_counter() - t0
    after: dict[str, Any] = {}
    if backend == "xnnpack":
        if progress:
            logger.info("audit: lowering with XnnpackPartitioner ...")
        t1 = time.perf_counter()
        lowered = lower_xnnpack(ep).exported_program()
        report["lower_seconds"] = time.perf_counter() - t1
        after.update(coverage(lowered))
    else:
        ops = count_ops(ep.graph)
        after["ops"] = ops
        # Without a partitioner nothing is known to be delegated: everything counts as outside.
        after["non_delegated"] = {k: v for k, v in ops.items() if _is_compute(k)}
        after["delegated_fraction"] = None
        after["delegate_segments"] = None
    after["max_rank"] = max_compute_rank(ep.graph)
    after["sdpa_remaining"] = sum(
        1 for n in ep.graph.nodes if n.op == "call_function" and "scaled_dot_product" in op_name(n.target)
    )
    report["after"] = after
    return report


def format_audit(report: dict[str, Any]) -> str:
    """A readable per-op table: count before, count after, and delegated or not."""
    before = report.get("before", {}).get("ops", {})
    after = report.get("after", {})
    ops_after = after.get("ops", {})
    outside = after.get("non_delegated", {})
    lowered = after.get("delegate_segments") is not None
    rows = []
    for name in sorted(set(before) | set(ops_after)):
        b, a, o = before.get(name, 0), ops_after.get(name, 0), outside.get(name, 0)
        rows.append((name, b, a, o, "NOT DELEGATED" if a and o and lowered else ""))
    lines = [
        f"backend {report.get('backend')}  input {report.get('input_shape')}",
        format_table(["op", "before", "after", "outside", ""], rows, [None, "d", "d", "d", None]),
    ]
    frac = after.get("delegated_fraction")
    lines.append(
        f"delegate segments: {after.get('delegate_segments')}  delegated fraction: "
        f"{'n/a' if frac is None else f'{frac:.3f}'}  max rank: {after.get('max_rank')}  "
        f"SDPA left: {after.get('sdpa_remaining')}"
    )
    passes = report.get("passes", [])
    if passes:
        rows = [
            (p["name"], p["changed"], p.get("matches"), p.get("nodes_before"), p.get("nodes_after"))
            for p in passes
        ]
        lines.append(format_table(["pass", "changed", "matches", "nodes before", "nodes after"], rows))
    return "\n".join(lines)
