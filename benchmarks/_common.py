"""Shared pieces of the benchmark scripts: running the CLI in a fresh process, timing, tables."""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

# The toy models (toy_runtime, toy_outliers) live with the tests; the benchmarks that use them import them
# from there after importing this module.
TESTS = Path(__file__).resolve().parents[1] / "tests"
if str(TESTS) not in sys.path:
    sys.path.append(str(TESTS))


def machine() -> str:
    """Where the figures were taken, printed beside every table."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{platform.node()}: {os.cpu_count()} cores ({cpu}), {mem:.0f} GiB RAM"


def add_shape_args(parser: argparse.ArgumentParser) -> None:
    """--preset/--frames/--height/--width with the product's defaults (vggt-1b, 2 frames, 518x518)."""
    parser.add_argument("--preset", default="vggt-1b")
    parser.add_argument("--frames", type=int, default=2)
    parser.add_argument("--height", type=int, default=518)
    parser.add_argument("--width", type=int, default=518)


def run_cli(args: list[str]) -> tuple[float, int]:
    """`vggt-et ARGS` in a fresh process, so its peak RSS is its own; stderr streams through for progress.

    Returns (wall seconds, the process's peak RSS in bytes, as the kernel reports it when reaped).
    """
    print("$ vggt-et " + " ".join(args), file=sys.stderr, flush=True)
    start = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-m", "vggt_et.cli", *args], stdout=sys.stderr)
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)  # reaped here, so Popen must be told
    if child.returncode != 0:
        raise subprocess.CalledProcessError(child.returncode, child.args)
    return time.perf_counter() - start, usage.ru_maxrss * 1024  # Linux reports KiB


def read_json(path: str | Path) -> dict:
    return json.loads(Path(path).read_text())


def time_calls(fn: Callable[[], object], iters: int, warmup: int = 1) -> dict[str, float]:
    """Wall-clock milliseconds of `iters` calls after `warmup` untimed ones: min, median, max."""
    return time_interleaved({"call": fn}, iters, warmup)["call"]


def time_interleaved(
    calls: dict[str, Callable[[], object]], iters: int, warmup: int = 1
) -> dict[str, dict[str, float]]:
    """Like `time_calls` for several programs, one call of each per round, so that a slow spell of the
    machine (another tenant, clock changes) falls on all of them and not on whichever ran then."""
    for _ in range(warmup):
        for fn in calls.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(iters):
        for name, fn in calls.items():
            start = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - start) * 1000)
    return {
        name: {"min": float(np.min(t)), "median": float(np.median(t)), "max": float(np.max(t))}
        for name, t in times.items()
    }
