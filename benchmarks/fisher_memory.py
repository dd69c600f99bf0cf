"""The Fisher pass with block recomputation against keeping every activation: peak RSS, time, same result.

    python benchmarks/fisher_memory.py                      # vggt-1b, 2x518x518, depth, 2 synthetic samples
    python benchmarks/fisher_memory.py --preset small --tasks camera,depth,points

Each variant is one `vggt-et fisher` in its own process (random weights, rotation folded, as `compile
--quant w4-fisher` computes it); its peak RSS is read from the kernel when the process is reaped. Prints
both side by side with their ratios and the largest relative difference between the two statistics.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from _common import add_shape_args, machine, run_cli
from vggt_et.quantizers.fisher import FisherStats
from vggt_et.utils.files import write_json
from vggt_et.utils.tables import format_table

VARIANTS = {"recompute blocks (default)": [], "keep activations": ["--keep-activations"]}


def run_fisher(args: argparse.Namespace, extra: list[str], output: Path) -> tuple[float, int]:
    """(wall seconds, peak RSS bytes) of one `vggt-et fisher` run."""
    shape = ["--frames", str(args.frames), "--height", str(args.height), "--width", str(args.width)]
    cli = ["fisher", "--preset", args.preset, "--random-weights", *shape, "--tasks", args.tasks]
    return run_cli([*cli, "--calib-samples", str(args.samples), *extra, "-o", str(output)])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_shape_args(parser)
    parser.add_argument("--tasks", default="depth")
    parser.add_argument("--samples", type=int, default=2, help="calibration samples")
    parser.add_argument("--work-dir", default=None)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="vggt-et-fisher-mem-"))
    work.mkdir(parents=True, exist_ok=True)

    measured, stats = {}, {}
    for name, extra in VARIANTS.items():
        output = work / f"fisher_{len(measured)}.pt"
        measured[name] = run_fisher(args, extra, output)
        stats[name] = FisherStats.load(str(output)).raw

    first, second = stats.values()
    max_rel = float(((first - second).abs() / second.abs().clamp_min(1e-30)).max())
    base_seconds, base_rss = next(iter(measured.values()))
    rows = [
        (name, seconds, seconds / base_seconds, rss / 2**30, rss / base_rss)
        for name, (seconds, rss) in measured.items()
    ]
    print(f"\nFisher pass on {machine()}")
    shape = f"{args.frames}x{args.height}x{args.width}"
    print(f"{args.preset}, random weights, {shape}, tasks {args.tasks}, {args.samples} synthetic samples\n")
    headers = ["variant", "wall s", "time ratio", "peak RSS GiB", "RSS ratio"]
    print(format_table(headers, rows, formats=[None, ".1f", ".2f", ".2f", ".2f"]))
    print(f"\nlargest relative difference between the two statistics: {max_rel:.2e}")
    if args.json:
        write_json(
            args.json,
            {
                "machine": machine(),
                "preset": args.preset,
                "shape": shape,
                "tasks": args.tasks,
                "samples": args.samples,
                "variants": {n: {"seconds": s, "peak_rss_bytes": r} for n, (s, r) in measured.items()},
                "max_relative_difference": max_rel,
            },
        )


if __name__ == "__main__":
    main()
