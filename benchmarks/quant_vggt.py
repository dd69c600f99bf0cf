"""Quantized VGGT programs against the fp32 one: size, latency and accuracy side by side, in one run.

    python benchmarks/quant_vggt.py                                   # vggt-1b, 2x518x518, depth, XNNPACK
    python benchmarks/quant_vggt.py --preset small --schemes fp32,int8,w4,w4-fisher --calib-samples 4

Each scheme is compiled in its own process (so its peak RSS is its own), then every program runs on the
same synthetic scene, one call of each per round (so slow spells of the machine hit all of them alike).
Prints .pte size and latency with their ratios to fp32, and the depth error of each program relative to
the fp32 program and to the scene's ground truth (median-scaled). Targets: int8
size <= 0.3 and latency <= 0.45 of fp32 (issue 5); w4 / w4-fisher size <= 0.16 of fp32 (issue 6).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from _common import add_shape_args, machine, read_json, run_cli, time_interleaved
from vggt_et.commands.compare import scene_inputs
from vggt_et.outputs.inference import program_info, run_program
from vggt_et.outputs.scoring import ground_truth_metrics
from vggt_et.runtime.metrics import rel_l2
from vggt_et.runtime.program import PteProgram, set_threads
from vggt_et.utils.files import write_json
from vggt_et.utils.tables import format_table


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_shape_args(parser)
    parser.add_argument("--schemes", default="fp32,int8,w4,w4-fisher")
    parser.add_argument("--calib-data", default=None, help="BlendedMVS-layout folder (default: synthetic)")
    parser.add_argument("--calib-samples", type=int, default=4)
    parser.add_argument(
        "--w4-group-size",
        type=int,
        default=None,
        help="int4 group size for w4 and w4-fisher (compile's default)",
    )
    parser.add_argument("--iters", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work-dir", default=None, help="Keep programs here; existing ones are reused.")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    work = Path(args.work_dir or tempfile.mkdtemp(prefix="vggt-et-quant-"))
    work.mkdir(parents=True, exist_ok=True)
    shape = ["--frames", str(args.frames), "--height", str(args.height), "--width", str(args.width)]
    reports, programs = {}, {}
    for scheme in args.schemes.split(","):
        w4 = scheme.startswith("w4") and args.w4_group_size is not None
        name = f"{args.preset}_{scheme}" + (f"_g{args.w4_group_size}" if w4 else "")
        pte, report = work / f"{name}.pte", work / f"{name}.json"
        if not (pte.exists() and report.exists()):
            extra = ["--calib-samples", str(args.calib_samples)] + (
                ["--calib-data", args.calib_data] if args.calib_data else []
            )
            extra += ["--w4-group-size", str(args.w4_group_size)] if w4 else []
            run_cli(
                [
                    "compile",
                    "--preset",
                    args.preset,
                    "--random-weights",
                    *shape,
                    "--quant",
                    scheme,
                    *extra,
                    "-o",
                    str(pte),
                    "--report",
                    str(report),
                ]
            )
        reports[scheme], programs[scheme] = read_json(report), pte

    set_threads(args.threads)
    info = program_info(programs["fp32"])
    images, truth, source = scene_inputs(info, args.calib_data, seed=1)  # not one of the calibration groups
    outputs, loaded = {}, {}
    for scheme, pte in programs.items():
        outputs[scheme] = run_program(pte, images)
        loaded[scheme] = PteProgram(pte)  # loaded once: execution is timed, not loading and weight packing
    print(f"timing {', '.join(programs)} in turn ({args.iters} rounds) ...", file=sys.stderr, flush=True)
    calls = {scheme: (lambda program=program: program.run([images])) for scheme, program in loaded.items()}
    latency = time_interleaved(calls, args.iters)
    del calls, loaded

    fp32 = reports["fp32"]
    print(f"\nquantized programs on {machine()}, {args.threads} threads")
    print(
        f"{args.preset}, random weights, {args.frames}x{args.height}x{args.width}, depth, XNNPACK; scene: {source}\n"
    )
    rows, table = {}, []
    for scheme, report in reports.items():
        gt = ground_truth_metrics(outputs[scheme], truth) if truth else {}
        row = {
            "pte_bytes": report["pte_bytes"],
            "size_ratio": report["pte_bytes"] / fp32["pte_bytes"],
            "latency_ms": latency[scheme]["median"],
            "latency_ms_stats": latency[scheme],
            "latency_ratio": latency[scheme]["median"] / latency["fp32"]["median"],
            "depth_rel_l2_vs_fp32": rel_l2(outputs[scheme]["depth"], outputs["fp32"]["depth"]),
            "gt": gt,
            "peak_rss_bytes": report["peak_rss_bytes"],
            "compile_seconds": report["total_seconds"],
        }
        rows[scheme] = row
        table.append(
            (
                scheme,
                row["pte_bytes"] / 2**20,
                row["size_ratio"],
                row["latency_ms"],
                row["latency_ratio"],
                row["depth_rel_l2_vs_fp32"],
                gt.get("abs_rel"),
                gt.get("delta1"),
                row["peak_rss_bytes"] / 2**30,
            )
        )
    headers = ["scheme", ".pte MiB", "size/fp32", "median ms", "lat/fp32", "depth rel err", "GT AbsRel"]
    headers += ["GT d1", "peak RSS GiB"]
    print(
        format_table(headers, table, formats=[None, ".1f", ".3f", ".1f", ".3f", ".4f", ".4f", ".3f", ".2f"])
    )
    print("\ntargets: int8 size <= 0.30, latency <= 0.45; w4 / w4-fisher size <= 0.16 (all vs fp32)")
    if args.json:
        write_json(args.json, {"machine": machine(), "threads": args.threads, "rows": rows})


if __name__ == "__main__":
    main()
