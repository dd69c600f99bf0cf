"""Output folders that a command owns: a re-run replaces what the previous run wrote, nothing else.

A command that writes a folder of results (`vggt-et run`, `vggt-et demo`) records the names it wrote in a
small manifest inside the folder. The next run into the same folder removes the previous run's files
that it does not write again (a depth-only run after a points run leaves no stale `points.ply`). A folder
that holds files vggt-et did not write is refused up front, so no user file is ever replaced or mixed
with our results.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from vggt_et.utils import checks
from vggt_et.utils.cleanup import remove
from vggt_et.utils.errors import UserError
from vggt_et.utils.files import atomic_write

MANIFEST = ".vggt-et-outputs.json"


@dataclass(frozen=True)
class OwnedFolder:
    """A checked output folder: `previous` are the names the last vggt-et run wrote into it."""

    path: Path
    command: str
    previous: frozenset[str]

    def finish(self, written: Iterable[str | Path]) -> None:
        """After a successful run: drop the previous run's leftovers, record what this run wrote."""
        names = {Path(p).name for p in written}
        for stale in sorted(self.previous - names):
            remove(self.path / stale)
        record = {"command": self.command, "files": sorted(names)}
        atomic_write(self.path / MANIFEST, json.dumps(record, indent=1) + "\n", user_path=False)


def _previous_names(path: Path, flag: str) -> frozenset[str] | None:
    manifest = path / MANIFEST
    if not manifest.is_file():
        return None
    try:
        files = json.loads(manifest.read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        raise UserError(
            f"{flag} {path}: {MANIFEST} is damaged; remove it or choose an empty folder"
        ) from None
    # Only plain names inside the folder: a hand-edited manifest must not reach outside it.
    return frozenset(
        n for n in files if isinstance(n, str) and n == Path(n).name and n not in ("", ".", "..")
    )


def claim_output_folder(path: str | Path, flag: str, command: str, planned: Iterable[str]) -> OwnedFolder:
    """Check `path` before any work: writable, and either new, empty, written by vggt-et before, or holding
    only names this run writes anyway. `planned` are the names (files or folders) the run will write."""
    path = checks.output_folder(path, flag)
    planned = set(planned)
    previous = _previous_names(path, flag) if path.is_dir() else None
    if path.is_dir():
        known = planned | (previous or set()) | {MANIFEST}
        foreign = sorted(p.name for p in path.iterdir() if p.name not in known)
        if foreign:
            shown = ", ".join(foreign[:3]) + (f" (+{len(foreign) - 3} more)" if len(foreign) > 3 else "")
            raise UserError(
                f"{flag} {path} holds files that vggt-et {command} did not write ({shown}); "
                "choose a new or empty folder"
            )
    return OwnedFolder(path, command, frozenset(previous or ()))
