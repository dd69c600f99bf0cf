"""Up-front checks of the paths a command was given, run before its first heavy stage.

A command names what it reads (checkpoint, images, program, calibration folder) and what it writes
(program, report, folders). Each is checked here in seconds, with one-line messages that name the flag,
the value and the fix, so that a typo never costs a compile and no output ever replaces an input or
another output.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from vggt_et.utils.errors import UserError

PathLike = str | os.PathLike


def _nearest_existing(path: Path) -> Path:
    """`path` or its closest ancestor that exists (what a later mkdir -p would write into)."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return probe


def _check_folder_writable(path: Path, flag: str, target: Path) -> None:
    """`target` will be created under `path`: `path` must be a writable folder, not a file."""
    if not path.is_dir():
        raise UserError(f"{flag} {target}: {path} is a file, not a folder; choose a path inside a folder")
    if not os.access(path, os.W_OK):
        raise UserError(
            f"{flag} {target}: folder {path} is not writable (permissions or a read-only file system); "
            "choose a writable location"
        )


def _existing(path: PathLike, flag: str, what: str, *, folder: bool) -> Path:
    """An existing, readable file or folder; the other kind is refused with its own message."""
    path = Path(path)
    if path.exists() and path.is_dir() != folder:
        kind = "a folder" if path.is_dir() else "a file"
        raise UserError(f"{flag} {path} is {kind}; pass the {what}{'' if folder else ' itself'}")
    if not path.exists():
        raise UserError(f"{flag} {path} not found; check the path of the {what}")
    if not os.access(path, os.R_OK):
        raise UserError(f"{flag} {path} is not readable; check its permissions")
    return path


def input_file(path: PathLike, flag: str, what: str = "file") -> Path:
    """An existing, readable file (a folder is refused with its own message)."""
    return _existing(path, flag, what, folder=False)


def input_folder(path: PathLike, flag: str, what: str = "folder") -> Path:
    """An existing, readable folder."""
    return _existing(path, flag, what, folder=True)


def output_file(path: PathLike, flag: str) -> Path:
    """A file that can be written (created or replaced): not a folder, in an existing writable folder."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{flag} {path} is an existing folder; name a file, e.g. {path / 'model.pte'}")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.exists():
        existing = _nearest_existing(parent)
        if existing.is_file():
            raise UserError(f"{flag} {path}: {existing} is a file, not a folder; choose another path")
        raise UserError(f"{flag} {path}: folder {parent} does not exist; create it or choose another path")
    _check_folder_writable(parent, flag, path)
    if path.exists() and not os.access(path, os.W_OK):
        raise UserError(f"{flag} {path} exists and is not writable; choose another path")
    return path


def output_folder(path: PathLike, flag: str) -> Path:
    """A folder that exists or can be created, and that can be written into."""
    path = Path(path)
    if path.exists():
        if not path.is_dir():
            raise UserError(f"{flag} {path} is an existing file; name a folder to write into")
        _check_folder_writable(path, flag, path)
        return path
    _check_folder_writable(_nearest_existing(path), flag, path)
    return path


def _key(path: Path) -> str:
    return os.path.realpath(path)


def _same(a: Path, b: Path) -> bool:
    if _key(a) == _key(b):
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def distinct_paths(
    outputs: Mapping[str, PathLike | None], inputs: Mapping[str, PathLike | Iterable[PathLike] | None]
) -> None:
    """No output may be another output or any input (hard links and symlinks included).

    `outputs`/`inputs` map a label (the flag, e.g. "--report") to a path, None when not given; an input
    label may name several paths (e.g. --images)."""
    named_outputs = [(label, Path(p)) for label, p in outputs.items() if p is not None]
    named_inputs: list[tuple[str, Path]] = []
    for label, value in inputs.items():
        if value is None:
            continue
        values = [value] if isinstance(value, (str, os.PathLike)) else list(value)
        named_inputs += [(label, Path(v)) for v in values]
    for i, (label, path) in enumerate(named_outputs):
        for other_label, other in named_outputs[:i]:
            if _same(path, other):
                raise UserError(
                    f"{label} {path} is the same file as {other_label} {other}; give them different paths"
                )
        for in_label, source in named_inputs:
            if _same(path, source):
                raise UserError(
                    f"{label} {path} is the same file as the input {in_label} {source}; "
                    "choose another output path"
                )


def model_source(checkpoint: PathLike | None, random_weights: bool) -> None:
    """Exactly one of --checkpoint FILE and --random-weights; the checkpoint must be a readable file."""
    if (checkpoint is None) == (not random_weights):
        raise UserError("give either --checkpoint FILE or --random-weights")
    if checkpoint is not None:
        input_file(checkpoint, "--checkpoint", "checkpoint file (model.safetensors or model.pt)")


def positive_int(value: int, flag: str) -> int:
    if value < 1:
        raise UserError(f"{flag} must be at least 1, got {value}")
    return value
