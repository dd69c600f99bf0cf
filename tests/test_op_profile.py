"""Per-op-kind profile of a `.pte` (vggt_et.runtime.op_profile) on the toy XNNPACK program."""

from __future__ import annotations

from pathlib import Path

from vggt_et.runtime.op_profile import format_table, group_by_kind, op_kind, profile_ops


def test_kinds_drop_the_instance_number_and_sum() -> None:
    assert op_kind("Batch Matrix Multiply (NC, F32) GEMM #14") == "Batch Matrix Multiply (NC, F32) GEMM"
    rows = group_by_kind([("Softmax (NC, F32) #1", 1.0), ("GEMM #1", 3.0), ("Softmax (NC, F32) #2", 2.0)])
    assert [(r.kind, r.ms, r.count) for r in rows] == [("Softmax (NC, F32)", 3.0, 2), ("GEMM", 3.0, 1)]
    assert abs(sum(r.share for r in rows) - 1.0) < 1e-9


def test_toy_profile_names_the_ops_xnnpack_ran(toy: Path) -> None:
    rows = profile_ops(toy)
    kinds = {row.kind for row in rows}
    # The toy ViT: patch conv, linears, attention matmuls and softmax, all inside XNNPACK.
    assert any(k.startswith("Convolution") for k in kinds), kinds
    assert any(k.startswith("Fully Connected") for k in kinds), kinds
    assert any(k.startswith("Softmax") for k in kinds), kinds
    assert all(row.ms >= 0 and row.count >= 1 for row in rows)
    assert rows == sorted(rows, key=lambda row: row.ms, reverse=True)
    table = format_table(rows, top=2)
    assert table.splitlines()[0].startswith("op kind") and "other kinds" in table and "total" in table
