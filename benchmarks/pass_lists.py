"""Time a backend's pass list against the same list at another git revision, on one exported program.

    python benchmarks/pass_lists.py --preset vggt-1b --against main        # 2x518x518, depth, xnnpack
    python benchmarks/pass_lists.py --preset tiny --against HEAD~3 --rounds 3

Exports the preset once, extracts `passes/` at `--against` (git archive) into a temporary package, and runs
the old and the current list on that program in turn, `--rounds` times each, alternating. Prints seconds per
run and their ratio, and whether both leave the same ops (then lowering costs the same, so the pass stage is
the whole compile-time difference).
"""

from __future__ import annotations

import argparse
import importlib
import io
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import torch

import vggt_et.passes as P
from vggt_et.options import ProgramShape
from vggt_et.pipeline.export import export_program

REPO = Path(__file__).resolve().parents[1]


def _old_passes(rev: str, folder: Path):
    """`passes/` as it was at `rev`, imported as the package `old_passes`."""
    data = subprocess.run(["git", "archive", rev, "passes"], cwd=REPO, check=True, capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(folder, filter="data")
    (folder / "passes").rename(folder / "old_passes")
    sys.path.insert(0, str(folder))
    return importlib.import_module("old_passes")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="vggt-1b")
    parser.add_argument("--against", default="main", help="git revision of the old passes")
    parser.add_argument("--backend", default="xnnpack")
    parser.add_argument("--frames", type=int, default=2)
    parser.add_argument("--height", type=int, default=518)
    parser.add_argument("--width", type=int, default=518)
    parser.add_argument("--outputs", default="depth")
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()

    import vggt_et

    with tempfile.TemporaryDirectory() as tmp:
        old = _old_passes(args.against, Path(tmp))
        model = vggt_et.load_model(args.preset, random_weights=True).eval()
        shape = ProgramShape(frames=args.frames, height=args.height, width=args.width)
        ep = export_program(model, shape, outputs=args.outputs.split(","))
        del model
        times: dict[str, list[float]] = {"old": [], "new": []}
        ops = {}
        for _ in range(args.rounds):
            for label, module in (("old", old), ("new", P)):
                t0 = time.perf_counter()
                out = module.apply(ep, args.backend)
                times[label].append(time.perf_counter() - t0)
                ops[label] = P.count_ops(out.graph)
                del out
    best = {k: min(v) for k, v in times.items()}
    print(f"{args.preset} {args.frames}x{args.height}x{args.width} {args.backend}, rounds {args.rounds}")
    print("| passes | seconds (best) | all runs |\n|---|---|---|")
    for label in ("old", "new"):
        runs = ", ".join(f"{t:.1f}" for t in times[label])
        print(f"| {label} ({args.against if label == 'old' else 'this tree'}) | {best[label]:.1f} | {runs} |")
    print(f"new / old: {best['new'] / best['old']:.3f}")
    same = ops["old"] == ops["new"]
    print(f"same ops after the passes: {same}")
    if not same:
        for name in sorted(set(ops["old"]) | set(ops["new"])):
            a, b = ops["old"].get(name, 0), ops["new"].get(name, 0)
            if a != b:
                print(f"  {name}: old {a}, new {b}")


if __name__ == "__main__":
    with torch.no_grad():
        main()
