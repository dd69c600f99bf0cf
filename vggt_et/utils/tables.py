"""The one table formatter: aligned plain text (or Markdown, for notes) for every command and benchmark."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def format_table(
    headers: Sequence[str],
    rows: Sequence[Sequence[Any]],
    formats: Sequence[str | None] | None = None,
    *,
    markdown: bool = False,
) -> str:
    """Plain aligned text table (numbers right-aligned, None shown as "-"); `markdown`: a Markdown table.

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
    if markdown:
        lines = ["| " + " | ".join(row) + " |" for row in table]
        lines.insert(1, "|" + "|".join("---:" if n else "---" for n in numeric) + "|")
        return "\n".join(lines)
    lines = []
    for n, row in enumerate(table):
        parts = [
            c.rjust(w) if numeric[i] else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(parts).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)
