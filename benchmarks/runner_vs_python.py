"""Host C++ runner vs ExecuTorch's Python runtime on the same `.pte`: load time, latency and peak RSS.

    python benchmarks/runner_vs_python.py [MODEL.pte] [--iters 20] [--threads 2] [--runner PATH]
                                          [--toy-channels 2048] [--json FILE]

Columns: the runner as is (XNNPACK packs the weights at load), the runner with --xnnpack-cache (packed
weights written by a priming run, memory-mapped by the measured one: an app's second launch on), and the
Python runtime. Each side runs in its own process, so each peak RSS (VmHWM) is that side's alone; the Python side also
reports its RSS before loading the program (interpreter + torch + executorch), and the figure above it.
Without MODEL.pte a toy conv + attention program is built with --toy-channels (2048: ~64 MiB of fp32
weights). Target: runner peak RSS <= 1.15x the .pte size.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from vggt_et.utils.tables import format_table

RSS_TARGET = 1.15


def _vm_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def python_child(model: str, inputs: list[str], iters: int, warmup: int, threads: int) -> None:
    """Runs in a subprocess: load, warm up, time; prints one JSON line."""
    from executorch.runtime import Runtime

    from vggt_et.runtime.program import PteProgram

    Runtime.get()  # imports and registers backends here, so load_ms is the program's load alone
    arrays = [np.load(path) for path in inputs]
    baseline = _vm_kib("VmRSS") * 1024
    start = time.perf_counter()
    program = PteProgram(model, threads=threads)
    load_ms = (time.perf_counter() - start) * 1000
    samples = []
    for index in range(warmup + iters):
        begin = time.perf_counter()
        program.run(arrays)
        if index >= warmup:
            samples.append((time.perf_counter() - begin) * 1000)
    print(
        json.dumps(
            {
                "load_ms": load_ms,
                "samples_ms": samples,
                "peak_rss_bytes": _vm_kib("VmHWM") * 1024,
                "baseline_rss_bytes": baseline,
                "threads": program.threads,
            }
        )
    )


def _latency(samples: list[float]) -> dict[str, float]:
    return {
        "min": float(np.min(samples)),
        "median": float(np.median(samples)),
        "p90": float(np.percentile(samples, 90)),
        "max": float(np.max(samples)),
    }


def _last_json(completed: subprocess.CompletedProcess, who: str) -> dict:
    if completed.returncode != 0:
        sys.exit(f"{who} failed ({completed.returncode}):\n{completed.stderr[-2000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def _run_runner(argv: list[str]) -> dict:
    return _last_json(subprocess.run(argv, capture_output=True, text=True, errors="replace"), "runner")


def compare(model: Path, runner: Path, iters: int, warmup: int, threads: int) -> dict:
    from vggt_et.runtime.program import PteProgram, example_inputs

    specs = PteProgram(model).inputs
    with tempfile.TemporaryDirectory(prefix="vggt-et-rvp-") as temp:
        inputs = []
        for index, array in enumerate(example_inputs(specs)):
            inputs.append(str(Path(temp) / f"input_{index}.npy"))
            np.save(inputs[-1], array)
        input_args = [a for p in inputs for a in ("--input", p)]
        common = ["--iters", str(iters), "--warmup", str(warmup), "--threads", str(threads)]
        base = [str(runner), "--model", str(model), *input_args]
        print(f"runner: {warmup} + {iters} iterations ...", file=sys.stderr)
        native = _run_runner([*base, *common])
        cache = ["--xnnpack-cache", str(Path(temp) / "weights.xnncache")]
        print("runner with XNNPACK weight cache: priming run, then measured run ...", file=sys.stderr)
        _run_runner([*base, *cache, "--iters", "1", "--warmup", "0", "--threads", str(threads)])
        cached = _run_runner([*base, *cache, *common])
        python_argv = [sys.executable, __file__, "--python-child", str(model), *common, *input_args]
        print(f"python runtime: {warmup} + {iters} iterations ...", file=sys.stderr)
        python = _last_json(
            subprocess.run(python_argv, capture_output=True, text=True, errors="replace"), "python"
        )
    keys = ("load_ms", "latency_ms", "peak_rss_bytes", "rss_after_load_bytes")
    return {
        "model": str(model),
        "pte_bytes": model.stat().st_size,
        "iters": iters,
        "threads": threads,
        "runner": {key: native.get(key) for key in keys},
        "runner_cached": {key: cached.get(key) for key in keys},
        "python": {
            "load_ms": python["load_ms"],
            "latency_ms": _latency(python["samples_ms"]),
            "peak_rss_bytes": python["peak_rss_bytes"],
            "baseline_rss_bytes": python["baseline_rss_bytes"],
        },
    }


def format_result(result: dict) -> str:
    """Side by side, with python/runner ratios; the cached runner is the deployment configuration."""
    columns = [result["runner"], result["runner_cached"], result["python"]]
    size, mib = result["pte_bytes"], 2**20
    python = result["python"]
    rows = [("load (ms)", [c["load_ms"] for c in columns])]
    for stat in ("min", "median", "p90"):
        rows.append((f"latency {stat} (ms)", [c["latency_ms"][stat] for c in columns]))
    rows.append(("peak RSS (MiB)", [c["peak_rss_bytes"] / mib for c in columns]))
    rows.append(("peak RSS / .pte", [c["peak_rss_bytes"] / size for c in columns]))
    above = (python["peak_rss_bytes"] - python["baseline_rss_bytes"]) / size
    rows.append(("peak RSS above baseline / .pte", [None, None, above]))

    def ratio(values: list, i: int) -> str:
        return "-" if values[i] in (None, 0) or values[2] is None else f"{values[2] / values[i]:.2f}x"

    table = [(name, *values, ratio(values, 0), ratio(values, 1)) for name, values in rows]
    lines = [
        f".pte: {result['model']} ({size / mib:.1f} MiB), {result['iters']} iterations, {result['threads']} threads",
        format_table(
            ["", "runner", "+cache", "python", "py/runner", "py/+cache"],
            table,
            [None, ".2f", ".2f", ".2f", None, None],
        ),
    ]
    for label, column in (("runner", columns[0]), ("runner + XNNPACK weight cache", columns[1])):
        ratio = column["peak_rss_bytes"] / size
        verdict = "meets" if ratio <= RSS_TARGET else "misses"
        lines.append(f"{label}: peak RSS {ratio:.2f}x the .pte size, {verdict} the {RSS_TARGET}x target")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", help=".pte to measure (default: a toy built with --toy-channels)")
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runner", help="runner executable (default: build android_runner host preset)")
    parser.add_argument("--toy-channels", type=int, default=2048)
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--python-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--input", action="append", default=[], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.python_child:
        python_child(args.model, args.input, args.iters, args.warmup, args.threads)
        return
    if args.model:
        model = Path(args.model)
        if not model.is_file():
            sys.exit(f"error: {model} does not exist")
    else:
        from toy_runtime import build_toy_pte

        import _common  # noqa: F401 - puts tests/ (the toy models) on the path

        model = Path(tempfile.gettempdir()) / f"vggt-et-toy-{args.toy_channels}.pte"
        if not model.is_file():
            print(f"building a toy program with {args.toy_channels} channels ...", file=sys.stderr)
            build_toy_pte(model, "fp32", channels=args.toy_channels)
    if args.runner:
        runner = Path(args.runner)
    else:
        from vggt_et.runtime.runner_build import build_runner

        runner = build_runner("host")
    result = compare(model, runner, args.iters, args.warmup, args.threads)
    print(format_result(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
