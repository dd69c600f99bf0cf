"""A process-wide list of the temporary files and folders a run has open, so a killed run can remove them.

Unwinding by exception is not enough on SIGTERM: code deep in the stack (the lowering, measured in CI)
may catch the `SystemExit` a signal handler raises and carry on writing. The CLI's handler therefore
removes what is listed here itself and leaves with `os._exit`; the `with` blocks remove the same paths
on the normal and the error path.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

_LIVE: dict[Path, None] = {}  # insertion-ordered set; a dict so removal order is creation order


@contextlib.contextmanager
def temporary(path: str | os.PathLike) -> Iterator[Path]:
    """List `path` (a file or folder that already exists) for the duration; remove it on any exit."""
    entry = Path(path)
    _LIVE[entry] = None
    try:
        yield entry
    finally:
        remove(entry)
        _LIVE.pop(entry, None)


def remove(path: Path) -> None:
    """Remove a file or a folder tree; a path that is already gone is fine."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def remove_all_live() -> list[Path]:
    """Remove every listed path (newest first) and return them; for signal handlers about to exit."""
    entries = list(reversed(_LIVE))
    for entry in entries:
        remove(entry)
    _LIVE.clear()
    return entries


def live() -> list[Path]:
    """The listed paths, oldest first (for tests)."""
    return list(_LIVE)
