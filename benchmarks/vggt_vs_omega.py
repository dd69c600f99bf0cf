"""VGGT-1B and VGGT-Ω side by side at equal frames and pixel count (518x518 against 512x512), in one run.

    python benchmarks/vggt_vs_omega.py                     # vggt-1b vs vggt-omega-1b, 2 frames, fp32,int8,w4
    python benchmarks/vggt_vs_omega.py --vggt tiny --omega vggt-omega-tiny --vggt-size 56 --omega-size 64

Each model is compiled with random weights (outputs depth and camera: what both predict; XNNPACK, the
product's default attention budget) at each --quant, in a fresh process: compile wall time, the compile
process's peak RSS and its ratio to the fp32 weights, .pte size. Then the C++ host runner runs the two
programs of a quantization in turns (a priming run each, then --rounds measured runs alternating, so load
on the machine falls on both): median latency and the runner's peak RSS. The last rows are the Ω / VGGT
ratios of every column. Rows go to OUT/rows.json as they finish (--resume reuses programs and rows).

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
from vggt_et.utils.tables import format_table

MIB = 2**20
COLUMNS = [
    # header, key, format
    ("model", "model", None),
    ("quant", "quant", None),
    ("input", "input", None),
    ("compile s", "compile_s", ".0f"),
    ("compile peak RSS MiB", "compile_rss_mib", ".0f"),
    ("RSS / fp32 weights", "compile_rss_over_weights", ".2f"),
    (".pte MiB", "pte_mib", ".0f"),
    ("latency s", "latency_s", ".2f"),
    ("runner peak RSS MiB", "runner_rss_mib", ".0f"),
    ("activations MiB", "activations_mib", ".0f"),
]


def _pte(args, out: Path, model: str, size: int, quant: str) -> Path:
    return out / f"{model}-{quant}-s{args.frames}-{size}.pte"


def _program(args, out: Path, model: str, size: int, quant: str) -> dict:
    pte = _pte(args, out, model, size, quant)
    shape = ["--frames", str(args.frames), "--height", str(size), "--width", str(size)]
    return compile_random(
        model, pte, shape, ["--outputs", "depth,camera"], quant=quant, lock=args.lock, reuse=args.resume
    )


def _row(model: str, quant: str, size: int, frames: int, report: dict, run: dict, baseline: int) -> dict:
    rss = run["peak_rss_bytes"]
    return {
        "model": model,
        "quant": quant,
        "input": f"{frames}x{size}x{size}",
        "compile_s": report["total_seconds"],
        "compile_rss_mib": report["peak_rss_bytes"] / MIB,
        "compile_rss_over_weights": report["peak_rss_over_weights"],
        "pte_mib": report["pte_bytes"] / MIB,
        "latency_s": run["latency_ms"]["median"] / 1000,
        "runner_rss_mib": rss / MIB,
        "activations_mib": (rss - report["pte_bytes"] - baseline) / MIB,
    }


def ratio_rows(rows: list[dict], vggt: str, omega: str) -> list[list]:
    """Ω / VGGT of every figure, per quantization both models have."""
    at = {(r["model"], r["quant"]): r for r in rows}
    out = []
    for quant in dict.fromkeys(r["quant"] for r in rows):
        if (vggt, quant) in at and (omega, quant) in at:
            a, b = at[(vggt, quant)], at[(omega, quant)]
            cells = [b[key] / a[key] if a[key] else None for _, key, fmt in COLUMNS if fmt]
            out.append(["Ω / VGGT", quant, "", *cells])
    return out


def table(rows: list[dict], vggt: str, omega: str) -> str:
    cells = [[r[key] for _, key, _ in COLUMNS] for r in rows]
    ratios = ratio_rows(rows, vggt, omega)
    formats = [fmt for _, _, fmt in COLUMNS]
    text = format_table([h for h, _, _ in COLUMNS], cells, formats, markdown=True)
    if ratios:
        ratio_formats = [None, None, None] + [".2f" for _, _, fmt in COLUMNS if fmt]
        text += "\n\n" + format_table([h for h, _, _ in COLUMNS], ratios, ratio_formats, markdown=True)
    return text


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--vggt", default="vggt-1b", help="VGGT preset")
    parser.add_argument("--omega", default="vggt-omega-1b", help="VGGT-Ω preset")
    parser.add_argument("--vggt-size", type=int, default=518, help="square input side (patch 14)")
    parser.add_argument("--omega-size", type=int, default=512, help="square input side (patch 16)")
    parser.add_argument("--frames", type=int, default=2)
    parser.add_argument("--quant", default="fp32,int8,w4")
    add_runner_args(parser, rounds=2, out="vggt_vs_omega_out")
    args = parser.parse_args()
    out, runner, baseline, rows = start_runner_benchmark(args)
    models = {args.vggt: args.vggt_size, args.omega: args.omega_size}
    title = (
        f"{args.vggt} at {args.frames}x{args.vggt_size}² vs {args.omega} at {args.frames}x{args.omega_size}², "
        f"depth + camera, random weights, XNNPACK, C++ host runner, {args.threads} threads; {machine()}"
    )
    print(f"# {title}\n# runner baseline {baseline / MIB:.0f} MiB", flush=True)
    for quant in args.quant.split(","):
        todo = [m for m in models if not any((r["model"], r["quant"]) == (m, quant) for r in rows.rows)]
        if not todo:
            continue

        def run(reports: dict[str, dict]) -> dict[str, dict]:
            programs = {}
            for model, report in reports.items():
                size = models[model]
                images = out / f"images-{size}.npy"
                data = np.random.default_rng(0).random((1, args.frames, 3, size, size), dtype=np.float32)
                np.save(images, data)
                programs[model] = (report["pte"], images)
            return run_runner_interleaved(
                runner, programs, out / "run", args.rounds, args.threads, args.lock, args.timeout
            )

        done = compile_then_run(
            quant,
            todo,
            lambda m, quant=quant: _program(args, out, m, models[m], quant),
            run,
            [_pte(args, out, m, models[m], quant) for m in todo],
            args.keep_pte,
        )
        if done is not None:
            reports, measured = done
            rows.add(
                *(_row(m, quant, models[m], args.frames, reports[m], measured[m], baseline) for m in todo)
            )
    print(
        f"\n# {title}\n# runner baseline {baseline / MIB:.0f} MiB\n" + table(rows.rows, args.vggt, args.omega)
    )


if __name__ == "__main__":
    main()
