"""Shared pieces of the benchmark scripts: running the CLI in a fresh process, timing, tables."""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np

from vggt_et.options import CALIBRATED_SCHEMES

K = TypeVar("K")

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


# --- The C++ host runner: compiling random-weight programs and timing them in turns (frames_scaling.py,
# --- vggt_vs_omega.py). Every compile and run may take a machine-wide lock file, so heavy runs never overlap.


def locked(lock: str | None, argv: list[str]) -> list[str]:
    """`argv` under `flock LOCK` (when given) at nice 10."""
    return (["flock", lock] if lock else []) + ["nice", "-n", "10", *argv]


def compile_random(
    preset: str,
    pte: Path,
    shape_args: list[str],
    extra_args: list[str],
    *,
    quant: str = "fp32",
    calib_samples: int = 1,
    lock: str | None = None,
    reuse: bool = False,
) -> dict:
    """`vggt-et compile --random-weights` to `pte` (report beside it, as .json); returns the report with
    "pte" set to the path. `reuse`: keep a program and report already there. Calibrated schemes get
    `calib_samples` groups (ranges change neither memory nor latency)."""
    report = pte.with_suffix(".json")
    if not (reuse and pte.is_file() and report.is_file()):
        argv = [sys.executable, "-m", "vggt_et.cli", "compile", "--preset", preset, "--random-weights"]
        argv += [*shape_args, *extra_args, "--quant", quant]
        if quant in CALIBRATED_SCHEMES:
            argv += ["--calib-samples", str(calib_samples)]
        argv += ["-o", str(pte), "--report", str(report)]
        print("$ " + " ".join(argv), file=sys.stderr, flush=True)
        subprocess.run(locked(lock, argv), check=True, stdout=sys.stderr)
    data = json.loads(report.read_text())
    data["pte"] = pte
    return data


def _runner_argv(runner: Path, pte: Path, images: Path, work: Path, threads: int | None) -> list[str]:
    argv = [str(runner), "--model", str(pte), "--input", str(images), "--iters", "1", "--warmup", "0"]
    argv += ["--json", str(work / "stats.json"), "--xnnpack-cache", str(work / f"{pte.stem}.xnncache")]
    return argv + (["--threads", str(threads)] if threads else [])


def run_runner_interleaved(
    runner: Path,
    programs: dict[str, tuple[Path, Path]],
    work: Path,
    rounds: int,
    threads: int | None,
    lock: str | None,
    timeout: float,
    *,
    keep_outputs: bool = False,
) -> dict[str, dict]:
    """`programs`: name → (.pte, images .npy). Per program a priming run (packs weights into its XNNPACK
    cache, as `vggt-et bench` does), then `rounds` measured runs taken in turns across the programs, so a
    slow spell of the machine falls on every one alike. Returns per name the median latency and the largest
    peak RSS of its measured runs; `keep_outputs`: also "output_dir", where its runs write output_<i>.npy."""
    work.mkdir(parents=True, exist_ok=True)
    runs: dict[str, list[dict]] = {name: [] for name in programs}
    for round_ in range(rounds + 1):
        for name, (pte, images) in programs.items():
            argv = _runner_argv(runner, pte, images, work, threads)
            if keep_outputs:
                (work / name).mkdir(exist_ok=True)
                argv += ["--output-dir", str(work / name)]
            subprocess.run(locked(lock, argv), check=True, stdout=subprocess.DEVNULL, timeout=timeout)
            if round_:  # round 0 primes the weight cache
                runs[name].append(json.loads((work / "stats.json").read_text()))
    for pte, _ in programs.values():
        (work / f"{pte.stem}.xnncache").unlink(missing_ok=True)
    return {
        name: {
            "latency_ms": {"median": float(np.median([r["latency_ms"]["median"] for r in measured]))},
            "peak_rss_bytes": max(r["peak_rss_bytes"] for r in measured),
            **({"output_dir": str(work / name)} if keep_outputs else {}),
        }
        for name, measured in runs.items()
    }


def runner_baseline(runner: Path, out: Path) -> int:
    """The runner's own resident memory: its peak RSS on a tiny program, less that program's size."""
    pte = out / "baseline-tiny.pte"
    if not pte.is_file():
        argv = [sys.executable, "-m", "vggt_et.cli", "compile", "--preset", "tiny", "--random-weights"]
        argv += ["--frames", "1", "--height", "28", "--width", "28", "-o", str(pte)]
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    images = np.random.default_rng(0).random((1, 1, 3, 28, 28), dtype=np.float32)
    np.save(out / "baseline.npy", images)
    argv = [str(runner), "--model", str(pte), "--input", str(out / "baseline.npy"), "--iters", "1"]
    argv += ["--warmup", "0", "--json", str(out / "baseline.json")]
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    return json.loads((out / "baseline.json").read_text())["peak_rss_bytes"] - pte.stat().st_size


def add_runner_args(parser: argparse.ArgumentParser, *, rounds: int, out: str) -> None:
    """The options of a benchmark that compiles programs and times them with the host runner in turns."""
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=rounds, help="Measured runs per program, interleaved.")
    parser.add_argument("--timeout", type=float, default=3600.0, help="Seconds per runner run.")
    parser.add_argument("--lock", default="/tmp/vggt-heavy.lock", help="flock file ('' for none).")
    parser.add_argument("--out", default=out)
    parser.add_argument("--resume", action="store_true", help="Reuse programs and rows already in --out.")
    parser.add_argument("--keep-pte", action="store_true", help="Keep the programs (GiBs each).")


@dataclass
class Rows:
    """A benchmark's rows and the OUT/rows.json they are saved to as they finish (--resume reads it back)."""

    path: Path
    rows: list[dict] = field(default_factory=list)

    def add(self, *rows: dict) -> None:
        self.rows.extend(rows)
        self.path.write_text(json.dumps(self.rows, indent=1))


def start_runner_benchmark(args: argparse.Namespace, baseline: bool = True) -> tuple[Path, Path, int, Rows]:
    """(output folder, host runner, the runner's own baseline bytes (0 unless `baseline`), rows kept from
    --resume)."""
    from vggt_et.runtime.runner_build import build_runner

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runner = build_runner("host")
    rows = Rows(out / "rows.json")
    if args.resume and rows.path.is_file():
        rows.rows = json.loads(rows.path.read_text())
    return out, runner, runner_baseline(runner, out) if baseline else 0, rows


def compile_then_run(
    label: str,
    keys: Sequence[K],
    compile_one: Callable[[K], dict],
    run: Callable[[dict[K, dict]], dict[K, dict]],
    programs: Sequence[Path],
    keep: bool,
) -> tuple[dict[K, dict], dict[K, dict]] | None:
    """Compiles a batch of programs (one report per key), runs them in turns, removes them unless `keep`.
    None (and one printed line) when a compile or run fails, so the benchmark goes on with its next batch."""
    start = time.perf_counter()
    try:
        reports = {key: compile_one(key) for key in keys}
        return reports, run(reports)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as error:
        print(f"# {label} failed after {time.perf_counter() - start:.0f} s: {error}", flush=True)
        return None
    finally:
        if not keep:
            for path in programs:
                path.unlink(missing_ok=True)
