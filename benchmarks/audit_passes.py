"""Op coverage before/after the pass lists, side by side with the naive lowering (no passes).

    python benchmarks/audit_passes.py --preset tiny --backend xnnpack [--frames 2 --height 70 --width 70]
    python benchmarks/audit_passes.py --preset tiny --backend xnnpack --naive   # baseline: folding only

Prints the per-op table and writes the audit JSON with --json. vggt-1b takes tens of minutes per lowering
on a 2-core machine: run it as a slow benchmark, not in CI.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import torch

import vggt_et.passes as P
from vggt_et.options import ProgramShape
from vggt_et.pipeline.export import export_program


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--backend", default="xnnpack", choices=P.BACKENDS)
    parser.add_argument("--frames", type=int, default=2)
    parser.add_argument("--height", type=int, default=70)
    parser.add_argument("--width", type=int, default=70)
    parser.add_argument("--outputs", default="depth")
    parser.add_argument("--naive", action="store_true", help="no passes except constant folding (baseline)")
    parser.add_argument("--json", help="write the audit JSON here")
    args = parser.parse_args()

    import vggt_et

    model = vggt_et.load_model(args.preset, random_weights=True).eval()
    shape = ProgramShape(frames=args.frames, height=args.height, width=args.width)
    t0 = time.perf_counter()
    ep = export_program(model, shape, outputs=args.outputs.split(","))
    print(f"export: {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    if args.naive:
        # The bicubic-aa resize must be folded for to_edge to accept the program at all.
        ep = P.run_passes(ep, ["fold_constants"])[0]
    with torch.no_grad():
        report = P.audit_program(ep, args.backend, list(shape.input_shape), run_passes=not args.naive)
    report["preset"] = args.preset
    report["naive"] = args.naive
    print(P.format_audit(report))
    if args.json:
        folder = os.path.dirname(os.path.abspath(args.json))
        with tempfile.NamedTemporaryFile("w", dir=folder, delete=False, suffix=".tmp") as f:
            json.dump(report, f, indent=1)
        os.chmod(f.name, 0o644)
        os.replace(f.name, args.json)


if __name__ == "__main__":
    main()
