"""One program for 1..N frames against the fixed-frame programs: size, outputs and latency at every k.

    python benchmarks/max_frames.py                                  # vggt-1b 518², 1..8 frames, fp32, 64MiB
    python benchmarks/max_frames.py --preset tiny --height 112 --width 112 --max-frames 4

Compiles `vggt-et compile --max-frames N` (one .pte, one method per frame count, weights stored once) and,
for each k in --frames (default 1..N), the fixed program for k frames (random weights, XNNPACK, same options).
Each k is run through the C++ host runner on both programs in turns (the runner picks the multi-method
program's method by the input's frame count; a priming run per program packs its weights, as `vggt-et bench`
does) and the table gives per k: both latencies and their ratio, the worst rel. L2 between the two programs'
outputs, and the sizes. Issue 13's targets: size <= 1.05x the fixed-N program; at every k rel. L2 <= 1e-5
and latency <= 1.10x. Rows go to OUT/rows.json as they finish (--resume keeps them and the programs).

Every compile and run takes the machine-wide lock file (--lock), so heavy runs never overlap.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from _common import (
    add_runner_args,
    compile_random,
    compile_then_run,
    machine,
    run_runner_interleaved,
    start_runner_benchmark,
)
from vggt_et.runtime.metrics import rel_l2
from vggt_et.utils.tables import format_table

MIB = 2**20
SIZE_TARGET, REL_L2_TARGET, LATENCY_TARGET = 1.05, 1e-5, 1.10


def _compile(args, pte: Path, frame_args: list[str]) -> dict:
    shape = [*frame_args, "--height", str(args.height), "--width", str(args.width)]
    extra = ["--outputs", args.outputs, "--attention-budget", args.budget]
    return compile_random(
        args.preset, pte, shape, extra, quant=args.quant, calib_samples=1, lock=args.lock, reuse=args.resume
    )


def _fixed(args, out: Path, frames: int) -> Path:
    return out / f"{args.preset}-{args.quant}-s{frames}.pte"


def _outputs(folder: Path) -> list[np.ndarray]:
    return [np.load(p) for p in sorted(folder.glob("output_*.npy"), key=lambda p: int(p.stem.split("_")[1]))]


def _run_pair(args, runner: Path, multi: Path, fixed: Path, frames: int, work: Path) -> dict[str, dict]:
    """Both programs on the same k-frame input, in turns; their outputs of the last run kept for the check."""
    images = np.random.default_rng(frames).random((1, frames, 3, args.height, args.width), dtype=np.float32)
    work.mkdir(parents=True, exist_ok=True)
    np.save(work / "images.npy", images)
    programs = {"multi": (multi, work / "images.npy"), "fixed": (fixed, work / "images.npy")}
    return run_runner_interleaved(
        runner, programs, work, args.rounds, args.threads, args.lock, args.timeout, keep_outputs=True
    )


def _row(frames: int, multi: dict, fixed_report: dict, measured: dict[str, dict]) -> dict:
    got, want = (_outputs(Path(measured[name]["output_dir"])) for name in ("multi", "fixed"))
    if len(got) != len(want):
        raise ValueError(f"k={frames}: the programs give {len(got)} and {len(want)} outputs")
    latency = {name: measured[name]["latency_ms"]["median"] for name in ("multi", "fixed")}
    return {
        "frames": frames,
        "fixed_ms": latency["fixed"],
        "multi_ms": latency["multi"],
        "latency_ratio": latency["multi"] / latency["fixed"],
        "rel_l2": max(rel_l2(g, w) for g, w in zip(got, want, strict=True)),
        "fixed_mib": fixed_report["pte_bytes"] / MIB,
        "multi_mib": multi["pte_bytes"] / MIB,
        "multi_rss_mib": measured["multi"]["peak_rss_bytes"] / MIB,
        "fixed_rss_mib": measured["fixed"]["peak_rss_bytes"] / MIB,
    }


HEADER = [
    "k",
    "fixed ms",
    "multi ms",
    "multi/fixed",
    "rel. L2",
    "fixed MiB",
    "fixed RSS MiB",
    "multi RSS MiB",
]
KEYS = [
    "frames",
    "fixed_ms",
    "multi_ms",
    "latency_ratio",
    "rel_l2",
    "fixed_mib",
    "fixed_rss_mib",
    "multi_rss_mib",
]
FORMATS = ["d", ".1f", ".1f", ".3f", ".1e", ".0f", ".0f", ".0f"]


def _table(rows: list[dict]) -> str:
    return format_table(HEADER, [[r[key] for key in KEYS] for r in rows], FORMATS, markdown=True)


def verdict(rows: list[dict], multi_mib: float, max_frames: int) -> list[str]:
    """The three targets, each with its measured figure (the size one needs the fixed-N row)."""
    lines = [f"multi-method program: {multi_mib:.1f} MiB"]
    full = next((r for r in rows if r["frames"] == max_frames), None)
    if full:
        ratio = multi_mib / full["fixed_mib"]
        lines.append(f"size / fixed-{max_frames}: {ratio:.4f}x (target <= {SIZE_TARGET})")
    if rows:
        worst_l2 = max(r["rel_l2"] for r in rows)
        worst_lat = max(rows, key=lambda r: r["latency_ratio"])
        lines.append(f"worst rel. L2 over k: {worst_l2:.2e} (target <= {REL_L2_TARGET:.0e})")
        lines.append(
            f"worst latency ratio: {worst_lat['latency_ratio']:.3f}x at k={worst_lat['frames']} "
            f"(target <= {LATENCY_TARGET})"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", default="vggt-1b")
    parser.add_argument("--height", type=int, default=518)
    parser.add_argument("--width", type=int, default=518)
    parser.add_argument("--max-frames", type=int, default=8)
    parser.add_argument("--frames", default=None, help="Comma list of k to check (default 1..N).")
    parser.add_argument("--quant", default="fp32")
    parser.add_argument("--outputs", default="depth")
    parser.add_argument("--budget", default="64MiB", help="--attention-budget of every program.")
    add_runner_args(parser, rounds=3, out="max_frames_out")
    args = parser.parse_args()
    counts = [int(s) for s in args.frames.split(",")] if args.frames else list(range(1, args.max_frames + 1))
    if not counts or min(counts) < 1 or max(counts) > args.max_frames:
        parser.error(f"--frames must lie in 1..{args.max_frames}, got {args.frames}")
    out, runner, _, rows = start_runner_benchmark(args, baseline=False)
    title = (
        f"{args.preset} {args.outputs} {args.height}x{args.width}, {args.quant}, attention {args.budget}, "
        f"XNNPACK, C++ host runner, {args.threads} threads; {machine()}"
    )
    print(f"# {title}", flush=True)
    multi_pte = out / f"{args.preset}-{args.quant}-max{args.max_frames}.pte"
    multi = _compile(args, multi_pte, ["--max-frames", str(args.max_frames)])
    done = {r["frames"] for r in rows.rows}
    for k in (k for k in counts if k not in done):
        batch = compile_then_run(
            f"k={k}",
            [k],
            lambda k: _compile(args, _fixed(args, out, k), ["--frames", str(k)]),
            lambda reports, k=k: {
                k: _run_pair(args, runner, multi_pte, _fixed(args, out, k), k, out / "run")
            },
            [_fixed(args, out, k)],
            args.keep_pte,
        )
        if batch is None:
            continue
        reports, measured = batch
        rows.add(_row(k, multi, reports[k], measured[k]))
        print(_table(rows.rows[-1:]).splitlines()[-1], flush=True)
    # Only once every k is done: an interrupted run keeps the multi-method program (its longest compile)
    # for --resume.
    if not args.keep_pte:
        multi_pte.unlink(missing_ok=True)
    print(f"\n# {title}\n{_table(sorted(rows.rows, key=lambda r: r['frames']))}")
    print("\n".join(verdict(rows.rows, multi["pte_bytes"] / MIB, args.max_frames)))


if __name__ == "__main__":
    main()
