"""Atomic file writing: a reader (or a crashed run) never sees a half-written file."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from vggt_et.cleanup import temporary


@contextlib.contextmanager
def atomic_output_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success it replaces `path` in one rename.

    The temporary file lives in the same folder so that `os.replace` never crosses file systems.
    `suffix` (default: the target's) lets writers that pick a format from the name (PIL) work.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{target.name}.", suffix=target.suffix if suffix is None else suffix, dir=target.parent
    )
    os.close(fd)
    with temporary(tmp_name) as tmp:
        yield tmp
        # mkstemp creates 0600 files; outputs get the usual permissions (0666 minus the umask).
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, target)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` atomically."""
    with atomic_output_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` (UTF-8) to `path` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))
