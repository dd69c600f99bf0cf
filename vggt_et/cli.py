"""The `vggt-et` command line. Every command: exit 0 on success, 2 with one line on a user error."""

from __future__ import annotations

import json
import sys

import click

from vggt_et.errors import UserError


class _Commands(click.Group):
    """Turns UserError into one line on stderr and exit code 2, never a traceback."""

    def invoke(self, ctx: click.Context):  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except UserError as exc:
            click.echo(f"vggt-et: error: {exc}", err=True)
            sys.exit(2)


@click.group(cls=_Commands)
@click.version_option(package_name="vggt-et")
def main() -> None:
    """vggt-et: compile VGGT into ExecuTorch programs for phones."""


@main.command()
@click.option("--preset", default=None, help="One preset (default: all).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def info(preset: str | None, as_json: bool) -> None:
    """Presets with parameter counts per part."""
    from vggt_et.io_utils import format_table
    from vggt_et.model import PRESETS
    from vggt_et.model.presets import get_preset
    from vggt_et.model.summary import parameter_counts

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
        click.echo(f"preset {report['preset']}: {report['tensors']} tensors, {size:.2f} GB in fp32")
        click.echo(format_table(["part", "params", "share"], rows) + "\n")
