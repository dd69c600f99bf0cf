"""The shared table formatter and JSON writer (vggt_et.utils.files)."""

from __future__ import annotations

import json

from vggt_et.utils.files import write_json
from vggt_et.utils.tables import format_table


def test_table_aligns_numbers_right_and_applies_column_formats() -> None:
    table = format_table(
        ["kind", "ms", "share"],
        [("conv", 12345.25, 0.5), ("total", 12.0, None)],
        formats=[None, ".1f", ".1%"],
    )
    lines = table.splitlines()
    assert lines[0].split() == ["kind", "ms", "share"]
    assert lines[2].split() == ["conv", "12345.2", "50.0%"]
    assert lines[3].split() == ["total", "12.0", "-"]  # None shows as "-" and keeps the column numeric
    assert lines[3].endswith("    -") and lines[2].index("12345.2") == lines[3].index("   12.0")


def test_table_defaults_keep_four_digits_and_thousands_separators() -> None:
    table = format_table(["name", "value", "count"], [("a", 0.123456, 1234567)])
    assert table.splitlines()[2].split() == ["a", "0.1235", "1,234,567"]


def test_write_json_replaces_the_file_whole(tmp_path) -> None:
    path = tmp_path / "report.json"
    write_json(path, {"a": 1})
    write_json(path, {"b": [1, 2]})
    assert json.loads(path.read_text()) == {"b": [1, 2]}
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]
