"""Where a `.pte`'s time goes: per delegate-op-kind times from one ETDump-profiled execution.

Why: a latency ratio says how much faster a quantized program is, not why it is not faster still. XNNPACK
records every op it runs ("Fully Connected (NC, QS8, QC8W) GEMM #12", "Softmax (NC, F32) #3"); grouping
them by kind (the name without its instance number) shows which work stays in fp32, what the conversions
between int8 and fp32 cost, and what is left to win.
"""

from __future__ import annotations

import os
import re
import tempfile
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

from vggt_et.utils import tables

from .program import PteProgram, example_inputs

_INSTANCE = re.compile(r"\s+#\d+$")


@dataclass
class OpKindTime:
    """One op kind's share of a profiled execution."""

    kind: str
    ms: float
    count: int
    share: float  # of all delegated op time

    def to_dict(self) -> dict:
        return asdict(self)


def op_kind(event_name: str) -> str:
    """ "Batch Matrix Multiply (NC, F32) GEMM #14" -> "Batch Matrix Multiply (NC, F32) GEMM"."""
    return _INSTANCE.sub("", event_name)


def group_by_kind(events: list[tuple[str, float]]) -> list[OpKindTime]:
    """(event name, ms) pairs grouped by op kind, costliest first."""
    totals: dict[str, list[float]] = {}
    for name, ms in events:
        totals.setdefault(op_kind(name), []).append(ms)
    whole = sum(sum(v) for v in totals.values()) or 1.0
    rows = [OpKindTime(kind, sum(v), len(v), sum(v) / whole) for kind, v in totals.items()]
    return sorted(rows, key=lambda row: row.ms, reverse=True)


def delegated_op_events(etdump_path: str | os.PathLike) -> list[tuple[str, float]]:
    """(op name, ms of its last execution) of every op a delegate profiled, from an ETDump file."""
    from executorch.devtools import Inspector

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Inspector warns that no ETRecord maps ops to graph nodes
        frame = Inspector(etdump_path=str(etdump_path)).to_dataframe()
    frame = frame[frame["is_delegated_op"].astype(bool)]
    return [
        (str(name), float(raw[-1]))
        for name, raw in zip(frame["event_name"], frame["raw"], strict=True)
        if len(raw)
    ]


def profile_ops(path: str | os.PathLike, *, warmup: int = 1) -> list[OpKindTime]:
    """Run the program's `forward` on seeded inputs `warmup` + 1 times with ETDump on, and group the ops
    the delegates profiled in the last run by kind. Threads: whatever the runtime is set to."""
    program = PteProgram(path, enable_etdump=True)
    inputs = example_inputs(program.inputs)
    for _ in range(warmup + 1):
        program.run(inputs)
    with tempfile.TemporaryDirectory(prefix="vggt-et-profile-") as scratch:
        dump = Path(scratch) / "profile.etdp"
        program.write_etdump(dump)
        return group_by_kind(delegated_op_events(dump))


def format_table(rows: list[OpKindTime], top: int | None = None) -> str:
    """A readable table: op kind, total ms, count, share; kinds below `top` summed in one row, then a total."""
    shown, rest = (rows, []) if top is None else (rows[:top], rows[top:])
    table: list[tuple] = [(r.kind, r.ms, r.count, r.share) for r in shown]
    if rest:
        summed = (sum(r.ms for r in rest), sum(r.count for r in rest), sum(r.share for r in rest))
        table.append((f"({len(rest)} other kinds)", *summed))
    table.append(("total", sum(r.ms for r in rows), sum(r.count for r in rows), None))
    return tables.format_table(["op kind", "ms", "count", "share"], table, formats=[None, ".1f", "d", ".1%"])
