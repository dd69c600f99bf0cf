"""Compile VGGT to XNNPACK and measure it side by side with our eager model, in one run.

    python benchmarks/compile_vggt.py                       # vggt-1b, random weights, 2x518x518, depth
    python benchmarks/compile_vggt.py --preset small --iters 3
    python benchmarks/compile_vggt.py --tflite              # adds a litert-torch column (extra installed)

Prints compile wall time per stage, peak RSS of the compile process and its ratio to the program's fp32
weight bytes, .pte size, delegated share and segments, and latency of the .pte vs eager (same inputs,
same threads), with ratios. Targets (issue 4): RSS ratio <= 2.0, total compile <= 5 min, .pte/eager
latency <= 0.6, .pte/TFLite latency <= 0.85.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from _common import add_shape_args, machine, read_json, run_cli, time_calls


def _time_pte(pte: Path, images: np.ndarray, iters: int) -> dict:
    """Load once (weights packed once) and time execution, as an app would; the program is freed on
    return so its weights do not crowd the eager model and TFLite."""
    from vggt_et.runtime.program import PteProgram

    program = PteProgram(pte)
    return time_calls(lambda: program.run([images]), iters)


def _time_eager(preset: str, outputs: str, images: np.ndarray, iters: int) -> dict:
    """Our eager model on the same inputs; built and freed here, so it never sits beside another model."""
    from vggt_et.model.loading import load_model
    from vggt_et.options import heads_for, parse_outputs
    from vggt_et.pipeline.export import VGGTProgram

    groups = parse_outputs(outputs)
    heads = heads_for(groups)
    eager = VGGTProgram(load_model(preset, random_weights=True, heads=heads), groups).eval()
    x = torch.from_numpy(images)
    with torch.no_grad():
        return time_calls(lambda: eager(x), iters)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_shape_args(parser)
    parser.add_argument("--outputs", default="depth")
    parser.add_argument("--iters", type=int, default=2)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--tflite", action="store_true")
    parser.add_argument(
        "--work-dir", default=None, help="Keep the programs and reports here; existing ones are reused."
    )
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    work = Path(args.work_dir or tempfile.mkdtemp(prefix="vggt-et-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    pte, report_path = work / f"{args.preset}_xnnpack_fp32.pte", work / f"{args.preset}_xnnpack_fp32.json"
    shape = ["--frames", str(args.frames), "--height", str(args.height), "--width", str(args.width)]
    common = ["--preset", args.preset, "--random-weights", *shape, "--outputs", args.outputs]
    if not (pte.exists() and report_path.exists()):
        run_cli(
            [
                "compile",
                *common,
                "--backend",
                "xnnpack",
                "--quant",
                "fp32",
                "-o",
                str(pte),
                "--report",
                str(report_path),
            ]
        )
    # Every conversion runs before this process loads any model: litert-torch's child peaks at 20 GiB on
    # VGGT-1B, and the eager model held here beside it was enough for the OOM killer on a 24 GiB machine.
    tfl = work / f"{args.preset}.tflite"
    if args.tflite and not tfl.exists():
        run_cli(
            ["compile", *common, "--backend", "tflite", "-o", str(tfl), "--report", str(work / "tflite.json")]
        )
    report = read_json(report_path)

    from vggt_et.runtime.program import set_threads

    torch.set_num_threads(args.threads)
    set_threads(args.threads)
    images = np.random.default_rng(0).random((1, args.frames, 3, args.height, args.width), dtype=np.float32)
    print(f"timing the .pte ({args.iters} iterations) ...", file=sys.stderr, flush=True)
    pte_ms = _time_pte(pte, images, args.iters)

    print(f"timing eager ({args.iters} iterations) ...", file=sys.stderr, flush=True)
    eager_ms = _time_eager(args.preset, args.outputs, images, args.iters)

    tflite_ms = None
    if args.tflite:
        from vggt_et.pipeline.tflite import TfliteProgram

        interpreter = TfliteProgram(str(tfl))  # loaded and allocated once, like the .pte
        tflite_ms = time_calls(lambda: interpreter.run(images), args.iters)

    print(f"\nvggt-et compile benchmark on {machine()}, {args.threads} threads")
    print(
        f"{args.preset}, random weights, {args.frames}x{args.height}x{args.width}, outputs {args.outputs}, XNNPACK fp32\n"
    )
    rows = [(stage, f"{s:.1f} s") for stage, s in report["stage_seconds"].items()]
    rows += [
        ("total compile", f"{report['total_seconds']:.1f} s  (target <= 300 s)"),
        ("peak RSS", f"{report['peak_rss_bytes'] / 2**30:.2f} GiB"),
        ("fp32 weight bytes", f"{report['weight_bytes'] / 2**30:.2f} GiB"),
        ("peak RSS / weights", f"{report['peak_rss_over_weights']:.2f}  (target <= 2.0)"),
        (".pte size", f"{report['pte_bytes'] / 2**20:.1f} MiB"),
        ("delegated compute ops", f"{100 * report['delegated_fraction']:.2f} %"),
        ("delegate segments", str(report["delegate_segments"])),
        ("non-delegated ops", json.dumps(report["non_delegated"])),
    ]
    width = max(len(r[0]) for r in rows)
    print("\n".join(f"{name:<{width}}  {value}" for name, value in rows))
    print(f"\n{'latency (ms)':<14}{'min':>10}{'median':>10}{'max':>10}")
    for name, ms in (("eager", eager_ms), (".pte", pte_ms), ("tflite", tflite_ms)):
        if ms:
            print(f"{name:<14}{ms['min']:>10.0f}{ms['median']:>10.0f}{ms['max']:>10.0f}")
    ratio = pte_ms["median"] / eager_ms["median"]
    print(f"\n.pte / eager latency: {ratio:.2f}  (target <= 0.6)")
    if tflite_ms:
        print(f".pte / TFLite latency: {pte_ms['median'] / tflite_ms['median']:.2f}  (target <= 0.85)")
    if args.json:
        summary = {
            "machine": machine(),
            "threads": args.threads,
            "compile": report,
            "eager_ms": eager_ms,
            "pte_ms": pte_ms,
            "tflite_ms": tflite_ms,
            "pte_over_eager": ratio,
        }
        Path(args.json).write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
