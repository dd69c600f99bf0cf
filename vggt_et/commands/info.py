"""`vggt-et info`: the presets and where their parameters sit."""

from __future__ import annotations

import json

import click


def show_presets(preset: str | None, as_json: bool) -> None:
    """One preset (or all): tensors, fp32 size and parameters per part, as a table or JSON."""
    from vggt_et.model import PRESETS
    from vggt_et.model.presets import get_preset
    from vggt_et.model.summary import parameter_counts
    from vggt_et.utils.tables import format_table

    names = [preset] if preset else list(PRESETS)
    for name in names:
        get_preset(name)
    reports = [parameter_counts(name) for name in names]
    if as_json:
        click.echo(json.dumps(reports[0] if preset else reports, indent=2))
        return
    for report in reports:
        total = report["total_params"]
        rows = [(part, count, f"{100 * count / total:.1f}%") for part, count in report["parts"].items()]
        rows.append(("total", total, "100%"))
        size = report["fp32_bytes"] / 1e9
        buffers = f" ({report['buffers']} buffers)" if report["buffers"] else ""
        click.echo(f"preset {report['preset']}: {report['tensors']} tensors{buffers}, {size:.2f} GB in fp32")
        click.echo(format_table(["part", "params", "share"], rows) + "\n")
