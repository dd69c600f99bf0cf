"""Where each program's time goes, per XNNPACK op kind, side by side (one ETDump-profiled run each).

    python benchmarks/op_profile.py int8.pte fp32.pte --top 12

Prints, per program, the op kinds by total time with count and share (fp32 matmuls, softmax, int8
GEMMs, int8<->fp32 conversions...), from `vggt_et.runtime.op_profile`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from _common import machine
from vggt_et.runtime.op_profile import format_table, profile_ops
from vggt_et.runtime.program import set_threads


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("programs", nargs="+", help=".pte files")
    parser.add_argument("--top", type=int, default=15, help="op kinds shown per program (the rest summed)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    set_threads(args.threads)
    print(f"op profiles on {machine()}, {args.threads} threads (one run after one warm-up)")
    results = {}
    for path in args.programs:
        rows = profile_ops(path)
        results[path] = [row.to_dict() for row in rows]
        print(f"\n{Path(path).name}\n{format_table(rows, args.top)}")
    if args.json:
        Path(args.json).write_text(
            json.dumps({"machine": machine(), "threads": args.threads, "programs": results}, indent=2)
        )


if __name__ == "__main__":
    main()
