"""benchmarks/runner_vs_python.py runs both sides on a `.pte` and prints the side-by-side table."""

from __future__ import annotations

import json
from pathlib import Path

from bench_script import run_benchmark
from toy_runtime import cached_toy_pte

from vggt_et.runtime.runner_build import build_runner


def test_table_and_json(tmp_path: Path) -> None:
    toy, runner = cached_toy_pte("fp32"), build_runner("host")
    figures = tmp_path / "figures.json"
    table = run_benchmark(
        "runner_vs_python.py",
        str(toy),
        "--runner",
        str(runner),
        "--iters",
        "3",
        "--warmup",
        "1",
        "--threads",
        "1",
        "--json",
        str(figures),
    )
    result = json.loads(figures.read_text())
    assert result["pte_bytes"] == toy.stat().st_size and result["iters"] == 3
    for side in ("runner", "runner_cached", "python"):
        latency = result[side]["latency_ms"]
        assert 0 < latency["min"] <= latency["median"] <= latency["p90"], side
        assert result[side]["peak_rss_bytes"] > 1 << 20, side
    # The interpreter with torch loaded dwarfs the runner.
    assert result["python"]["peak_rss_bytes"] > 5 * result["runner"]["peak_rss_bytes"]
    assert "peak RSS / .pte" in table and "py/runner" in table and "the 1.15x target" in table
