"""benchmarks/quant_accuracy.py on `tiny`: held-out scenes, table, JSON and chart; its targets on given rows.

The run compiles one program (the fp32 reference) and takes the eager and floor rows: an int8 or w4 compile
of `tiny` alone takes one to four minutes on a 2-core machine, so the quantized rows are left to the
benchmark's own runs and the target logic is checked on rows written here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from bench_script import load_benchmark, run_benchmark


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def test_table_json_and_chart(tmp_path: Path) -> None:
    figures, chart = tmp_path / "figures.json", tmp_path / "chart.png"
    stdout = run_benchmark(
        "quant_accuracy.py",
        *"--preset tiny --random-weights --scenes 2 --frames 2 --schemes fp32-eager,untrained,constant".split(),
        *["--threads", "1", "--json", str(figures), "--png", str(chart)],
    )
    table = [_cells(line) for line in stdout.splitlines() if line.startswith("|")]
    assert table[0] == [
        "scheme",
        "S",
        ".pte MiB",
        "AbsRel",
        "AbsRel / fp32",
        "δ<1.25",
        "AUC@30",
        "rel. error vs fp32",
        "compile s",
    ]
    body = {row[0]: row for row in table[2:]}
    # fp32 .pte always runs (the reference of the last columns); the rows keep the benchmark's order.
    assert list(body) == ["fp32 eager", "fp32 .pte", "untrained (floor)", "constant depth (floor)"]
    assert body["fp32 .pte"][7] == "-" and body["fp32 .pte"][8] != "-"  # no error against itself
    assert body["fp32 eager"][2] == "-" and body["fp32 eager"][7] != "-"
    assert body["constant depth (floor)"][6] == "-" and body["constant depth (floor)"][7] == "-"
    assert "$ python benchmarks/quant_accuracy.py --preset tiny" in stdout

    result = json.loads(figures.read_text())
    keys = {"machine", "command", "preset", "weights", "frames", "scenes", "scene_seeds", "rows", "targets"}
    assert keys <= set(result)
    assert result["scene_seeds"] == [[10**6], [10**6 + 1]] and result["frames"] == [2]
    rows = {r["scheme"]: r for r in result["rows"]}
    assert list(rows) == ["fp32-eager", "fp32", "untrained", "constant"]
    assert rows["fp32"]["pte_bytes"] > 0 and rows["fp32"]["compile_seconds"] > 0
    assert len(rows["fp32"]["per_scene"]) == 2 and 0 <= rows["fp32"]["auc30"] <= 1
    assert rows["fp32-eager"]["depth_rel_l2_vs_fp32"] < 1e-3  # lowering keeps fp32 depth
    # With --random-weights the untrained floor is the same model as the eager row.
    assert rows["untrained"]["abs_rel"] == pytest.approx(rows["fp32-eager"]["abs_rel"])
    assert 0 < rows["constant"]["abs_rel"] and 0 <= rows["constant"]["delta1"] <= 1
    assert "auc30" not in rows["constant"] and "pte_bytes" not in rows["constant"]
    assert {t["target"] for t in result["targets"]} == {
        "fp32 .pte abs_rel <= 0.5 x untrained (floor)",
        "fp32 .pte abs_rel < constant depth (floor)",
        "fp32 .pte auc30 > untrained (floor)",
    }
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _row(scheme: str, **figures) -> dict:
    bench = load_benchmark("quant_accuracy.py")
    return {"scheme": scheme, "label": bench.SCHEMES[scheme].label, "frames": 2, **figures}


def test_targets_on_given_rows() -> None:
    bench = load_benchmark("quant_accuracy.py")
    rows = [
        _row("fp32", abs_rel=0.10, auc30=0.6, pte_bytes=400),
        _row("int8", abs_rel=0.104, auc30=0.6, pte_bytes=100, depth_rel_l2_vs_fp32=0.02),
        _row("w4-g32", quant="w4", w4_group_size=32, abs_rel=0.13, depth_rel_l2_vs_fp32=0.10, pte_bytes=60),
        _row("w4-g64", quant="w4", w4_group_size=64, abs_rel=0.101, depth_rel_l2_vs_fp32=0.01, pte_bytes=60),
        _row(
            "w4-fisher",
            quant="w4-fisher",
            w4_group_size=32,
            abs_rel=0.11,
            depth_rel_l2_vs_fp32=0.05,
            pte_bytes=60,
        ),
        _row("untrained", abs_rel=0.30, auc30=0.1),
    ]
    met = {t["target"]: t["met"] for t in bench.targets(rows)}
    assert met == {
        "fp32 .pte abs_rel <= 0.5 x untrained (floor)": True,
        "fp32 .pte auc30 > untrained (floor)": True,
        "int8 static abs_rel <= 1.05 x fp32 .pte": True,
        # compared with plain w4 at its own group size (32), not with the better g64 row
        "w4-fisher closer to fp32 than w4 g32 at no larger size": True,
    }
    rows[4]["pte_bytes"] = 61  # larger than plain w4: not met
    assert not bench.targets(rows)[-1]["met"]
