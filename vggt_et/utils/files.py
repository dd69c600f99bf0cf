"""The one atomic writer: a reader (or a crashed run) never sees a half-written output.

Everything the package writes goes through `atomic_output_path` (a temporary file beside the target,
renamed over it on success) or `atomic_write` built on it, which also turns a full or read-only file
system into one UserError when the path is the user's.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from vggt_et.utils.cleanup import temporary
from vggt_et.utils.errors import UserError

Content = bytes | str | Callable[[IO[bytes]], Any]


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


def atomic_write(path: str | os.PathLike, content: Content, *, user_path: bool = True) -> Path:
    """Write bytes, UTF-8 text or whatever `content(file)` writes, atomically; returns the path.

    `user_path`: the path came from the user (a flag, or a folder they named), so it is checked first
    (checks.output_file: a missing folder is their mistake) and a failed write is one UserError, the old
    file left as it was. Internal files (datasets, statistics beside a checked path) create their folder."""
    if user_path:
        from vggt_et.utils.checks import output_file

        path = output_file(path, "output")
    if isinstance(content, str):
        content = content.encode("utf-8")
    try:
        with atomic_output_path(path) as tmp, open(tmp, "wb") as handle:
            if isinstance(content, bytes):
                handle.write(content)
            else:
                content(handle)
    except OSError as exc:  # permissions, a read-only or full file system
        if exc.strerror is None or not user_path:
            raise
        raise UserError(f"cannot write {path}: {exc.strerror}; choose a writable output path") from None
    return Path(path)


def write_json(path: str | os.PathLike, data: Any, *, user_path: bool = True) -> Path:
    """Indented JSON (values JSON cannot hold written as str), atomically."""
    return atomic_write(path, json.dumps(data, indent=2, default=str) + "\n", user_path=user_path)
