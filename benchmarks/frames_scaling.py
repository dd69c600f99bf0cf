"""Memory and latency against the frame count: today's attention form and the bounded one, side by side.

    python benchmarks/frames_scaling.py                                   # vggt-1b, S = 1,2,4,8,16, fp32 + w4
    python benchmarks/frames_scaling.py --frames 2,4,8 --quant fp32 --forms none,64MiB
    python benchmarks/frames_scaling.py --preset tiny --height 336 --width 336 --forms none,4MiB

For each (quant, frame count, attention form) it compiles VGGT (random weights, depth, XNNPACK) with
`vggt-et compile --attention-budget FORM` ('none' is today's whole attention), runs the program once with the
C++ host runner (a priming run that writes XNNPACK's packed-weight cache, as `vggt-et bench` does, then
--rounds measured runs taken in turns with the other forms at the same S, so load on the machine falls on
every form alike; the median is reported) and prints compile time, .pte size, latency, latency per frame, the runner's peak RSS
and activations = peak RSS - .pte - the runner's own baseline (its peak RSS on a tiny program less that
program). ExecuTorch's memory plan does not see inside the XNNPACK delegate, so the process is measured.
Rows are written to OUT/rows.json as they finish (a stopped run keeps its rows; --resume skips them) and a
PNG plot of peak RSS and latency against S goes to OUT/frames_scaling.png.

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


def _pte(args, out: Path, frames: int, quant: str, form: str) -> Path:
    return out / f"{args.preset}-{quant}-{form}-s{frames}.pte"


def _compile(args, out: Path, frames: int, quant: str, form: str) -> dict:
    pte = _pte(args, out, frames, quant, form)
    return compile_random(
        args.preset,
        pte,
        ["--frames", str(frames), "--height", str(args.height), "--width", str(args.width)],
        ["--outputs", "depth", "--attention-budget", form],
        quant=quant,
        calib_samples=args.calib_samples,
        lock=args.lock,
        reuse=args.resume,
    )


def _run_interleaved(args, runner: Path, ptes: dict[str, Path], frames: int, work: Path) -> dict[str, dict]:
    """Per form: median latency and peak RSS of `--rounds` runs taken in turns (`run_runner_interleaved`)."""
    images = np.random.default_rng(0).random((1, frames, 3, args.height, args.width), dtype=np.float32)
    work.mkdir(parents=True, exist_ok=True)
    np.save(work / "images.npy", images)
    programs = {form: (pte, work / "images.npy") for form, pte in ptes.items()}
    return run_runner_interleaved(runner, programs, work, args.rounds, args.threads, args.lock, args.timeout)


def _row(quant: str, form: str, frames: int, report: dict, stats: dict, baseline: int) -> dict:
    latency = stats["latency_ms"]["median"] / 1000
    rss = stats["peak_rss_bytes"]
    return {
        "quant": quant,
        "form": form,
        "frames": frames,
        "compile_s": report["total_seconds"],
        "pte_mib": report["pte_bytes"] / MIB,
        "latency_s": latency,
        "latency_per_frame_s": latency / frames,
        "peak_rss_mib": rss / MIB,
        "activations_mib": (rss - report["pte_bytes"] - baseline) / MIB,
    }


HEADER = ["quant", "form", "S", "compile s", ".pte MiB", "latency s", "s/frame", "peak RSS MiB", "activ. MiB"]
KEYS = [
    "quant",
    "form",
    "frames",
    "compile_s",
    "pte_mib",
    "latency_s",
    "latency_per_frame_s",
    "peak_rss_mib",
    "activations_mib",
]
FORMATS = [None, None, "d", ".0f", ".0f", ".2f", ".2f", ".0f", ".0f"]


def format_rows(rows: list[dict]) -> str:
    return format_table(HEADER, [[r[k] for k in KEYS] for r in rows], FORMATS, markdown=True)


def ratios(rows: list[dict]) -> list[str]:
    """Bounded vs today at equal (quant, S), and the per-frame activation increments of each form."""
    out = []
    index = {(r["quant"], r["form"], r["frames"]): r for r in rows}
    for (quant, form, frames), r in sorted(index.items()):
        today = index.get((quant, "none", frames))
        if form != "none" and today:
            out.append(
                f"{quant} S={frames}: {form} / today: latency {r['latency_s'] / today['latency_s']:.3f}x, "
                f"peak RSS {r['peak_rss_mib'] / today['peak_rss_mib']:.3f}x"
            )
    for quant, form in sorted({(r["quant"], r["form"]) for r in rows}):
        series = sorted(
            (r["frames"], r["activations_mib"]) for r in rows if (r["quant"], r["form"]) == (quant, form)
        )
        steps = [
            f"S {a}->{b}: {(y - x) / (b - a):.0f} MiB/frame"
            for (a, x), (b, y) in zip(series, series[1:], strict=False)
        ]
        if len(steps) > 1:  # and over the whole range: linear growth keeps the steps near this figure
            (a, x), (b, y) = series[0], series[-1]
            steps.append(f"overall S {a}->{b}: {(y - x) / (b - a):.0f} MiB/frame")
        if steps:
            out.append(f"{quant} {form} activation increment: " + "; ".join(steps))
    return out


def plot(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_rss, ax_lat) = plt.subplots(1, 2, figsize=(11, 4.2))
    for quant, form in sorted({(r["quant"], r["form"]) for r in rows}):
        series = sorted(
            (r for r in rows if (r["quant"], r["form"]) == (quant, form)), key=lambda r: r["frames"]
        )
        s = [r["frames"] for r in series]
        label = f"{quant}, attention {'whole (today)' if form == 'none' else form}"
        style = "--" if form == "none" else "-"
        ax_rss.plot(s, [r["peak_rss_mib"] / 1024 for r in series], style, marker="o", label=label)
        ax_lat.plot(s, [r["latency_s"] for r in series], style, marker="o", label=label)
    ax_rss.set(xlabel="frames S", ylabel="runner peak RSS (GiB)", title="memory")
    ax_lat.set(xlabel="frames S", ylabel="latency (s)", title="latency")
    for ax in (ax_rss, ax_lat):
        ax.set_xscale("log", base=2)
        ax.grid(alpha=0.3)
    ax_rss.legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", default="vggt-1b")
    parser.add_argument("--height", type=int, default=518)
    parser.add_argument("--width", type=int, default=518)
    parser.add_argument(
        "--frames", default="1,2,4,8,16", help="Comma list of frame counts, run in this order."
    )
    parser.add_argument("--quant", default="fp32,w4")
    parser.add_argument("--forms", default="none,64MiB", help="Attention budgets; 'none' is today's form.")
    parser.add_argument(
        "--calib-samples", type=int, default=1, help="Calibration groups of quantized programs (cost only)."
    )
    add_runner_args(parser, rounds=3, out="frames_scaling_out")
    args = parser.parse_args()
    out, runner, baseline, rows = start_runner_benchmark(args)
    done = {(r["quant"], r["form"], r["frames"]) for r in rows.rows}
    title = f"{args.preset} depth {args.height}x{args.width}, XNNPACK, C++ host runner, {args.threads} threads; {machine()}"
    print(f"# {title}\n# runner baseline {baseline / MIB:.0f} MiB", flush=True)
    for quant in args.quant.split(","):
        for frames in (int(s) for s in args.frames.split(",")):
            forms = [f for f in args.forms.split(",") if (quant, f, frames) not in done]
            if not forms:
                continue
            batch = compile_then_run(
                f"{quant} S={frames}",
                forms,
                lambda form, frames=frames, quant=quant: _compile(args, out, frames, quant, form),
                lambda reports, frames=frames: _run_interleaved(
                    args, runner, {form: r["pte"] for form, r in reports.items()}, frames, out / "run"
                ),
                [_pte(args, out, frames, quant, form) for form in forms],
                args.keep_pte,
            )
            if batch is None:
                continue
            reports, measured = batch
            rows.add(*(_row(quant, form, frames, reports[form], measured[form], baseline) for form in forms))
            print("\n".join(format_rows(rows.rows[-len(forms) :]).splitlines()[2:]), flush=True)
            plot(rows.rows, out / "frames_scaling.png", title)
    print(f"\n# {title}\n# runner baseline {baseline / MIB:.0f} MiB\n" + format_rows(rows.rows))
    print("\n".join(ratios(rows.rows)))
    plot(rows.rows, out / "frames_scaling.png", title)
    print(f"plot: {out / 'frames_scaling.png'}")


if __name__ == "__main__":
    main()
