"""The `vggt-et` command line."""

from __future__ import annotations

import click


@click.group()
@click.version_option(package_name="vggt-et")
def main() -> None:
    """vggt-et: compile VGGT into ExecuTorch programs for phones."""
