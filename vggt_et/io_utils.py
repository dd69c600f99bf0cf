"""Small output helpers shared by every command: atomic writes and readable tables."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

from vggt_et.data.atomic import atomic_output_path
from vggt_et.errors import UserError


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], Any]) -> Path:
    """Write through `write(file)` into a temp file beside `path`, then rename: never a half-written file.

    Unlike the data writers, a missing output folder is the user's mistake here: one clear error."""
    path = check_writable(path)
    try:
        with atomic_output_path(path) as tmp, open(tmp, "wb") as handle:
            write(handle)
    except OSError as exc:  # permissions, a read-only or full file system: the old file stays as it was
        if exc.strerror is None:
            raise
        raise UserError(f"cannot write {path}: {exc.strerror}; choose a writable output path") from None
    return path


def write_json(path: str | Path, data: Any) -> Path:
    text = json.dumps(data, indent=2, sort_keys=False, default=str) + "\n"
    return atomic_write(path, lambda f: f.write(text.encode()))


def check_writable(path: str | Path, flag: str = "output") -> Path:
    """Fail early (before hours of compiling) if `path` cannot be written (see checks.output_file)."""
    from vggt_et.checks import output_file

    return output_file(path, flag)


def format_table(
    headers: Sequence[str], rows: Sequence[Sequence[Any]], formats: Sequence[str | None] | None = None
) -> str:
    """Plain aligned text table (numbers right-aligned, None shown as "-").

    `formats` gives a format spec per column (".1f", ".1%"; None: the default, 4 significant digits for
    floats and thousands separators for ints).
    """

    def cell(value: Any, spec: str | None) -> str:
        if value is None:
            return "-"
        if spec is not None and isinstance(value, (int, float)):
            return format(value, spec)
        if isinstance(value, float):
            return f"{value:.4g}" if abs(value) < 1e5 else f"{value:,.0f}"
        if isinstance(value, int) and not isinstance(value, bool):
            return f"{value:,}"
        return str(value)

    specs = list(formats) if formats is not None else [None] * len(headers)
    table = [[str(h) for h in headers]] + [[cell(v, specs[i]) for i, v in enumerate(row)] for row in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(headers))]
    numeric = [
        bool(rows) and all(isinstance(row[i], (int, float)) or row[i] is None for row in rows)
        for i in range(len(headers))
    ]
    lines = []
    for n, row in enumerate(table):
        parts = [
            c.rjust(w) if numeric[i] else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(parts).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)
