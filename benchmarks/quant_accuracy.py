"""Every quantization scheme on held-out synthetic scenes: depth and cameras against ground truth, one run.

    python benchmarks/quant_accuracy.py --preset small --checkpoint builtin:small-synthetic \\
        --json quant_accuracy.json --png quant_accuracy.png                        # issue 16's table
    python benchmarks/quant_accuracy.py --preset tiny --random-weights --scenes 2 --frames 2 \\
        --schemes fp32,int8,constant                                               # a quick look

Scenes: `vggt_et.data.held_out.held_out_scenes`, the training generator at seeds training never draws, at
the compiled shape (default: the preset's 5 x 7 patches, as `vggt-et demo`), for every frame count S of
--frames.

Rows: the eager model and one `.pte` per scheme and frame count, compiled in this process through the
package's compile API (XNNPACK, outputs depth and camera, calibrated schemes on --calib-data or the
synthetic calibration scenes), run on every scene with the package's runtime, then deleted; and two floors:
the untrained model (random weights, same preset, eager) and a constant-depth predictor (the median
ground-truth depth at every pixel; median scaling makes any constant the same, and it has no cameras).

Columns (means over the scenes): `.pte` size, depth AbsRel and δ<1.25 against ground truth (prediction
median-scaled per frame, `vggt_et.outputs.scoring.ground_truth_metrics`), camera AUC@30 over frame pairs
(relative poses; '-' where a row has no camera), the depth's relative L2 error against the fp32 program on
the same scene, and compile seconds. Targets (issue 16): fp32 AbsRel <= 0.5x the untrained model's and below
the constant's, AUC@30 above the untrained model's; int8 static AbsRel <= 1.05x fp32; w4-fisher closer to
fp32 than plain w4 (same group size) at no larger size.
"""

from __future__ import annotations

import argparse
import gc
import logging
import shlex
import sys
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from _common import machine
from vggt_et.data.held_out import HELD_OUT_SEED, HeldOutScene, held_out_scenes
from vggt_et.options import CALIBRATED_SCHEMES, QuantSettings, W4FisherFlags
from vggt_et.outputs.scoring import Predict, score_scenes
from vggt_et.utils.errors import UserError
from vggt_et.utils.tables import format_table

logger = logging.getLogger("vggt_et.benchmarks.quant_accuracy")  # shown as the CLI shows its progress

OUTPUTS = ("depth", "camera")


@dataclass(frozen=True)
class Scheme:
    """One row: `kind` "pte" (compiled with `quant` and its settings), "eager" (the model itself),
    "untrained" (random weights, eager) or "constant" (one depth per pixel)."""

    label: str
    kind: str = "pte"
    quant: str = "fp32"
    quantization: QuantSettings = field(default_factory=QuantSettings)
    w4_fisher: W4FisherFlags = field(default_factory=W4FisherFlags)


def _alone(technique: str) -> W4FisherFlags:
    """w4-fisher with one of its three techniques on and the other two off."""
    flags = {"rotation": False, "mixed_precision": False, "fisher_clip": False}
    return W4FisherFlags(**{**flags, technique: True})


SCHEMES: dict[str, Scheme] = {
    "fp32-eager": Scheme("fp32 eager", kind="eager"),
    "fp32": Scheme("fp32 .pte"),
    "fp16": Scheme("fp16", quant="fp16"),
    "int8": Scheme("int8 static", quant="int8"),
    "int8-dynamic": Scheme(
        "int8 dynamic", quant="int8", quantization=QuantSettings(int8_activations="dynamic")
    ),
    "w4-g32": Scheme("w4 g32", quant="w4", quantization=QuantSettings(w4_group_size=32)),
    "w4-g64": Scheme("w4 g64", quant="w4", quantization=QuantSettings(w4_group_size=64)),
    "w4-pc": Scheme("w4 per channel", quant="w4", quantization=QuantSettings(w4_group_size=0)),
    "w4-fisher": Scheme("w4-fisher (all three)", quant="w4-fisher"),
    "w4-fisher-rotation": Scheme("w4-fisher rotation only", quant="w4-fisher", w4_fisher=_alone("rotation")),
    "w4-fisher-mixed": Scheme(
        "w4-fisher mixed precision only", quant="w4-fisher", w4_fisher=_alone("mixed_precision")
    ),
    "w4-fisher-clip": Scheme("w4-fisher clipping only", quant="w4-fisher", w4_fisher=_alone("fisher_clip")),
    "untrained": Scheme("untrained (floor)", kind="untrained"),
    "constant": Scheme("constant depth (floor)", kind="constant"),
}
REFERENCE = "fp32"  # the program the "rel. error vs fp32" column compares with; always run


def constant_depth(scene: HeldOutScene) -> dict[str, np.ndarray]:
    """The floor: the median ground-truth depth at every pixel of every frame, no cameras."""
    depth = scene.truth["depth"]
    value = float(np.median(depth[depth > 0])) if (depth > 0).any() else 1.0
    return {"depth": np.full((1, *depth.shape, 1), value, dtype=np.float32)}


def compile_options(args: argparse.Namespace, scheme: Scheme, frames: int, output: Path):
    from vggt_et.options import CompileOptions

    quantization = scheme.quantization
    if scheme.quant == "w4-fisher" and args.fisher_group_size is not None:
        quantization = replace(quantization, w4_group_size=args.fisher_group_size)
    calibrated = scheme.quant in CALIBRATED_SCHEMES
    return CompileOptions(
        preset=args.preset,
        checkpoint=args.checkpoint,
        random_weights=args.random_weights,
        seed=args.seed,
        quant=scheme.quant,
        frames=frames,
        height=args.height,
        width=args.width,
        outputs=OUTPUTS,
        output=str(output),
        calib_data=args.calib_data if calibrated else None,
        calib_samples=args.calib_samples if calibrated else None,
        quantization=quantization,
        w4_fisher=scheme.w4_fisher,
    )


def predictor(
    args: argparse.Namespace, name: str, frames: int, work: Path, row: dict
) -> tuple[Predict, Path | None]:
    """What makes a row's predictions at `frames` frames (a program is compiled here: its size and compile
    time go into `row`), and the program file to delete afterwards."""
    from vggt_et.commands.compare import eager_outputs
    from vggt_et.model.loading import load_model
    from vggt_et.options import heads_for, output_names
    from vggt_et.outputs.inference import ProgramInfo, run_program
    from vggt_et.pipeline.compile import compile_model
    from vggt_et.pipeline.quantize import w4_group_size

    scheme = SCHEMES[name]
    if scheme.kind == "constant":
        return constant_depth, None
    if scheme.kind == "pte":
        pte = work / f"{name}_s{frames}.pte"
        options = compile_options(args, scheme, frames, pte)
        row["quant"] = scheme.quant
        if scheme.quant.startswith("w4"):
            row["w4_group_size"] = w4_group_size(options)
        logger.info("S=%d %s: compiling", frames, name)
        report = compile_model(options, quiet=True)
        row.update(pte_bytes=report["pte_bytes"], compile_seconds=report["total_seconds"])
        return lambda scene: run_program(pte, scene.images, threads=args.threads), pte
    trained = scheme.kind == "eager"
    model = load_model(
        args.preset,
        args.checkpoint if trained else None,
        random_weights=args.random_weights or not trained,
        seed=args.seed,
        heads=heads_for(OUTPUTS),
    )
    shape = (1, frames, 3, args.height, args.width)
    info = ProgramInfo(args.preset, "eager", "fp32", shape, tuple(output_names(OUTPUTS)))
    return lambda scene: eager_outputs(model, info, scene.images), None


def run_schemes(args: argparse.Namespace, names: list[str], frames: int, work: Path) -> list[dict]:
    """Every row at `frames` frames, the fp32 program first (the reference); each program and model is
    freed before the next row."""
    scenes = held_out_scenes(args.scenes, frames, args.height, args.width)
    rows, reference = {}, None
    for name in sorted(names, key=lambda n: n != REFERENCE):
        row: dict = {"scheme": name, "label": SCHEMES[name].label, "frames": frames}
        predict, pte = predictor(args, name, frames, work, row)
        logger.info("S=%d %s: %d scenes", frames, name, len(scenes))
        compared = None if SCHEMES[name].kind == "constant" or name == REFERENCE else reference
        metrics, depths = score_scenes(f"S={frames} {name}", predict, scenes, compared)
        row.update(metrics)
        if name == REFERENCE:
            reference = depths
        rows[name] = row
        if pte is not None:
            pte.unlink()
        del predict, depths
        gc.collect()
    return [rows[n] for n in names]


# Issue 16's targets of the form "row A's figure OP factor x row B's figure".
SIMPLE_TARGETS = [
    ("fp32", "abs_rel", "<=", 0.5, "untrained"),
    ("fp32", "abs_rel", "<", 1.0, "constant"),
    ("fp32", "auc30", ">", 1.0, "untrained"),
    ("int8", "abs_rel", "<=", 1.05, "fp32"),
]


def targets(rows: list[dict]) -> list[dict]:
    """Issue 16's targets, per frame count, for the rows that ran (a target is skipped without its rows)."""
    import operator

    compare = {"<=": operator.le, "<": operator.lt, ">": operator.gt}
    out = []
    for frames in sorted({r["frames"] for r in rows}):
        at = {r["scheme"]: r for r in rows if r["frames"] == frames}
        fp32 = at[REFERENCE]
        for mine, key, op, factor, theirs in SIMPLE_TARGETS:
            if mine in at and theirs in at:
                ours, bound = at[mine][key], factor * at[theirs][key]
                scaled = "" if factor == 1.0 else f"{factor} x "
                out.append(
                    {
                        "frames": frames,
                        "target": f"{at[mine]['label']} {key} {op} {scaled}{at[theirs]['label']}",
                        "met": bool(compare[op](ours, bound)),
                        "detail": f"{ours:.4f} vs {scaled}{at[theirs][key]:.4f}",
                    }
                )
        fisher = at.get("w4-fisher")
        plain = fisher and next(
            (
                r
                for r in at.values()
                if r.get("quant") == "w4" and r["w4_group_size"] == fisher["w4_group_size"]
            ),
            None,
        )
        if plain:
            gap = [abs(r["abs_rel"] - fp32["abs_rel"]) for r in (fisher, plain)]
            rel = [r["depth_rel_l2_vs_fp32"] for r in (fisher, plain)]
            size = [r["pte_bytes"] for r in (fisher, plain)]
            out.append(
                {
                    "frames": frames,
                    "target": f"w4-fisher closer to fp32 than {plain['label']} at no larger size",
                    "met": gap[0] < gap[1] and rel[0] < rel[1] and size[0] <= size[1],
                    "detail": f"|AbsRel - fp32| {gap[0]:.4f} vs {gap[1]:.4f}; rel. error {rel[0]:.4f} vs "
                    f"{rel[1]:.4f}; {size[0] / 2**20:.2f} vs {size[1] / 2**20:.2f} MiB",
                }
            )
    return out


COLUMNS = [
    # header, row key (None: computed), format
    ("scheme", "label", None),
    ("S", "frames", None),
    (".pte MiB", "pte_mib", ".2f"),
    ("AbsRel", "abs_rel", ".4f"),
    ("AbsRel / fp32", "abs_rel_ratio", ".3f"),
    ("δ<1.25", "delta1", ".3f"),
    ("AUC@30", "auc30", ".3f"),
    ("rel. error vs fp32", "depth_rel_l2_vs_fp32", ".4f"),
    ("compile s", "compile_seconds", ".1f"),
]


def table(rows: list[dict]) -> str:
    """The one table (Markdown): a row per scheme and frame count; '-' where a row has no such figure."""
    fp32 = {r["frames"]: r["abs_rel"] for r in rows if r["scheme"] == REFERENCE}
    cells = []
    for row in rows:
        derived = {
            "pte_mib": row["pte_bytes"] / 2**20 if "pte_bytes" in row else None,
            "abs_rel_ratio": row["abs_rel"] / fp32[row["frames"]] if fp32[row["frames"]] else None,
        }
        cells.append([derived[key] if key in derived else row.get(key) for _, key, _ in COLUMNS])
    headers, formats = [c[0] for c in COLUMNS], [c[2] for c in COLUMNS]
    return format_table(headers, cells, formats, markdown=True)


def plot(rows: list[dict], path: str, title: str) -> None:
    """Bars per scheme (one per frame count): AbsRel vs ground truth with the .pte size above each bar, and
    the depth's rel. error vs the fp32 program (floors hatched)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from vggt_et.utils.files import atomic_write

    names = list(dict.fromkeys(r["scheme"] for r in rows))
    frame_counts = sorted({r["frames"] for r in rows})
    at = {(r["scheme"], r["frames"]): r for r in rows}
    width = 0.8 / len(frame_counts)
    fig, axes = plt.subplots(2, 1, figsize=(max(8.0, 0.75 * len(names) + 3), 8), sharex=True)
    for k, frames in enumerate(frame_counts):
        x = np.arange(len(names)) + (k - (len(frame_counts) - 1) / 2) * width
        picked = [at.get((n, frames), {}) for n in names]
        for ax, key in zip(axes, ("abs_rel", "depth_rel_l2_vs_fp32"), strict=True):
            values = [r.get(key, np.nan) for r in picked]
            bars = ax.bar(x, values, width, label=f"S = {frames}")
            for bar, name in zip(bars, names, strict=True):
                if SCHEMES[name].kind in ("untrained", "constant"):
                    bar.set_hatch("//")
        for xi, r in zip(x, picked, strict=True):
            if "pte_bytes" in r:
                axes[0].annotate(
                    f"{r['pte_bytes'] / 2**20:.1f}",
                    (xi, r["abs_rel"]),
                    ha="center",
                    va="bottom",
                    fontsize=7,
                )
    axes[0].set(ylabel="depth AbsRel vs ground truth", title="accuracy (numbers: .pte MiB)")
    axes[1].set(ylabel="depth rel. L2 error vs fp32 .pte", title="distance from the fp32 program")
    axes[1].set_xticks(np.arange(len(names)), [SCHEMES[n].label for n in names], rotation=35, ha="right")
    for ax in axes:
        ax.margins(y=0.15)  # room for the size labels
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8, loc="upper left")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    atomic_write(path, lambda handle: fig.savefig(handle, format="png", dpi=110))
    plt.close(fig)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", default="small")
    weights = parser.add_mutually_exclusive_group(required=True)
    weights.add_argument("--checkpoint", help="checkpoint file or builtin:NAME (the trained model)")
    weights.add_argument("--random-weights", action="store_true", help="seeded random weights (no training)")
    parser.add_argument("--seed", type=int, default=0, help="random weights and calibration samples")
    parser.add_argument("--scenes", type=int, default=20, help="held-out scenes (seeds 10**6 + i)")
    parser.add_argument("--frames", default="2,4", help="comma list of frame counts")
    parser.add_argument("--height", type=int, default=None, help="default: 5 patches")
    parser.add_argument("--width", type=int, default=None, help="default: 7 patches")
    parser.add_argument(
        "--schemes",
        default=",".join(SCHEMES),
        help=f"comma list from {', '.join(SCHEMES)} (fp32 always runs: it is the reference)",
    )
    parser.add_argument("--calib-data", default=None, help="BlendedMVS-layout folder (default: synthetic)")
    parser.add_argument("--calib-samples", type=int, default=None, help="compile's default when not given")
    parser.add_argument(
        "--fisher-group-size", type=int, default=None, help="w4-fisher's group size (compile's default: 32)"
    )
    parser.add_argument("--threads", type=int, default=2, help="runtime threads")
    parser.add_argument("--json", default=None, help="write every figure (and per-scene ones) here")
    parser.add_argument("--png", default=None, help="write the bar chart here")
    args = parser.parse_args(argv)
    unknown = [n for n in args.schemes.split(",") if n not in SCHEMES]
    if unknown:
        parser.error(f"unknown scheme(s) {', '.join(unknown)}; choose from {', '.join(SCHEMES)}")
    try:
        args.frame_counts = sorted({int(f) for f in args.frames.split(",")})
    except ValueError:
        parser.error(f"--frames {args.frames!r} must be a comma list of integers")
    if args.scenes < 1 or min(args.frame_counts) < 2:
        parser.error("--scenes must be at least 1 and every frame count at least 2 (cameras need a pair)")
    requested = set(args.schemes.split(",")) | {REFERENCE}
    args.names = [n for n in SCHEMES if n in requested]
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    from vggt_et.cli import log_to_stderr, quiet_third_party

    quiet_third_party()  # the CLI's logging: our progress on stderr, the stack's import chatter hidden
    log_to_stderr()
    logging.getLogger("vggt_et").propagate = False  # ExecuTorch's basicConfig would print it twice
    from vggt_et.model.presets import get_preset
    from vggt_et.runtime.program import set_threads
    from vggt_et.utils import checks
    from vggt_et.utils.files import write_json

    command = "python benchmarks/quant_accuracy.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    try:
        patch = get_preset(args.preset).patch_size
        args.height, args.width = args.height or 5 * patch, args.width or 7 * patch
        for flag in ("json", "png"):
            if getattr(args, flag):
                checks.output_file(getattr(args, flag), f"--{flag}")
        set_threads(args.threads)
        rows = []
        with tempfile.TemporaryDirectory(prefix="vggt-et-quant-accuracy-") as work:
            for frames in args.frame_counts:
                rows += run_schemes(args, args.names, frames, Path(work))
    except UserError as exc:
        sys.exit(f"quant_accuracy: {exc}")
    weights = args.checkpoint or f"random weights (seed {args.seed})"
    held_out = f"{args.scenes} held-out scenes (synthetic_sample seeds [{HELD_OUT_SEED}+i])"
    title = f"{args.preset}, {weights}, {args.height}x{args.width}, {held_out}, XNNPACK"
    met = targets(rows)
    print(f"quantization schemes on held-out scenes, {machine()}, {args.threads} runtime threads")
    print(f"{title}\n$ {command}\n")
    print(table(rows))
    print(
        "\nmeans over the scenes; depth median-scaled per frame; AUC@30 over frame pairs (relative poses); "
        "the constant-depth floor predicts one depth per pixel (the median of the ground truth, though any "
        "constant scores the same after median scaling) and no cameras"
    )
    for t in met:
        print(f"target S={t['frames']}: {t['target']}: {'met' if t['met'] else 'NOT met'} ({t['detail']})")
    if args.json:
        write_json(
            args.json,
            {
                "machine": machine(),
                "command": command,
                "preset": args.preset,
                "weights": weights,
                "height": args.height,
                "width": args.width,
                "frames": args.frame_counts,
                "scenes": args.scenes,
                "scene_seeds": [[HELD_OUT_SEED + i] for i in range(args.scenes)],
                "outputs": list(OUTPUTS),
                "calib_data": args.calib_data or "synthetic scenes",
                "rows": rows,
                "targets": met,
            },
        )
    if args.png:
        plot(rows, args.png, title)


if __name__ == "__main__":
    main()
