"""What a killed run must undo: the temporary files and folders it has open and the programs it started.

Unwinding by exception is not enough on SIGTERM: code deep in the stack (the lowering, seen in CI) may
catch the `SystemExit` a signal handler raises and carry on writing. The CLI's handler therefore calls
`undo_all()` and leaves with `os._exit`; on the normal and the error path the `with` blocks and
`run_child` undo the same things themselves.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path

_LIVE_PATHS: dict[Path, None] = {}  # insertion-ordered sets
_LIVE_CHILDREN: dict[subprocess.Popen, None] = {}


@contextlib.contextmanager
def temporary(path: str | os.PathLike) -> Iterator[Path]:
    """List `path` (a file or folder that already exists) for the duration; remove it on any exit."""
    entry = Path(path)
    _LIVE_PATHS[entry] = None
    try:
        yield entry
    finally:
        remove(entry)
        _LIVE_PATHS.pop(entry, None)


def remove(path: Path) -> None:
    """Remove a file or a folder tree; a path that is already gone is fine."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def run_child(argv: Sequence[str], *, timeout: float | None = None) -> subprocess.CompletedProcess:
    """`subprocess.run(argv, capture_output=True, text=True)` that a killed run stops as well.

    The child gets its own process group so that stopping it reaches what it started (ninja under a
    build script); on a timeout the group is killed and `subprocess.TimeoutExpired` raised, as
    `subprocess.run` does.
    """
    popen = subprocess.Popen(
        list(argv),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
        start_new_session=True,
    )
    _LIVE_CHILDREN[popen] = None
    try:
        stdout, stderr = popen.communicate(timeout=timeout)
    except BaseException:
        _stop(popen, signal.SIGKILL)
        popen.communicate()
        raise
    finally:
        _LIVE_CHILDREN.pop(popen, None)
    return subprocess.CompletedProcess(popen.args, popen.returncode, stdout, stderr)


def _stop(popen: subprocess.Popen, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(popen.pid, signum)


def undo_all() -> tuple[list[Path], int]:
    """Stop every listed child (SIGTERM to its group), then remove every listed path, newest first.

    For signal handlers about to exit. Returns (the paths, how many children were stopped).
    """
    children = list(_LIVE_CHILDREN)
    for popen in children:
        if popen.poll() is None:
            _stop(popen, signal.SIGTERM)
    _LIVE_CHILDREN.clear()
    paths = list(reversed(_LIVE_PATHS))
    for entry in paths:
        remove(entry)
    _LIVE_PATHS.clear()
    return paths, len(children)


def live_paths() -> list[Path]:
    """The listed paths, oldest first (for tests)."""
    return list(_LIVE_PATHS)


def live_children() -> list[subprocess.Popen]:
    """The listed child processes (for tests)."""
    return list(_LIVE_CHILDREN)
