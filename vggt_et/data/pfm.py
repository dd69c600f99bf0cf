"""PFM (portable float map) reading and writing, as used by BlendedMVS depth maps.

Format: a type line ("Pf" grayscale, "PF" RGB), a "W H" line, a scale line whose sign gives the
byte order (negative = little-endian), then float32 rows stored bottom-to-top.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from vggt_et.utils.errors import UserError
from vggt_et.utils.files import atomic_write


def _next_header_line(data: bytes, pos: int, path: Path) -> tuple[str, int]:
    """Return the next non-empty header line (decoded) and the position after its newline."""
    while True:
        end = data.find(b"\n", pos)
        if end < 0:
            raise UserError(f"{path}: PFM header is truncated; re-extract or re-render the depth map")
        line = data[pos:end].strip()
        pos = end + 1
        if line and not line.startswith(b"#"):
            try:
                return line.decode("ascii"), pos
            except UnicodeDecodeError:
                raise UserError(f"{path}: PFM header is not ASCII; this is not a PFM file") from None


def read_pfm(path: str | os.PathLike) -> np.ndarray:
    """Read a PFM file into a float32 array, [H, W] for "Pf" or [H, W, 3] for "PF", top row first."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: PFM file not found; check the dataset path")
    data = path.read_bytes()
    kind, pos = _next_header_line(data, 0, path)
    if kind not in ("Pf", "PF"):
        raise UserError(f"{path}: not a PFM file (header {kind[:10]!r}, expected 'Pf' or 'PF')")
    channels = 1 if kind == "Pf" else 3
    dims_line, pos = _next_header_line(data, pos, path)
    dims = dims_line.split()
    if len(dims) == 1:  # some writers put W and H on separate lines
        more, pos = _next_header_line(data, pos, path)
        dims += more.split()
    scale_line, pos = _next_header_line(data, pos, path)
    try:
        width, height = (int(v) for v in dims)
        scale = float(scale_line)
    except ValueError:
        raise UserError(f"{path}: malformed PFM header (size {dims_line!r}, scale {scale_line!r})") from None
    if width <= 0 or height <= 0 or scale == 0.0:
        raise UserError(f"{path}: malformed PFM header (size {width}x{height}, scale {scale})")
    dtype = np.dtype("<f4" if scale < 0 else ">f4")
    count = width * height * channels
    if len(data) - pos < count * 4:
        raise UserError(
            f"{path}: PFM file is truncated ({len(data) - pos} data bytes, expected {count * 4} "
            f"for {width}x{height}); re-extract or re-render it"
        )
    values = np.frombuffer(data, dtype=dtype, count=count, offset=pos)
    shape = (height, width) if channels == 1 else (height, width, 3)
    return np.ascontiguousarray(values.reshape(shape)[::-1]).astype(np.float32)


def write_pfm(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write a [H, W] or [H, W, 3] array as a little-endian float32 PFM, atomically."""
    array = np.asarray(array, dtype=np.float32)
    if array.ndim == 2:
        kind = "Pf"
    elif array.ndim == 3 and array.shape[2] == 3:
        kind = "PF"
    else:
        raise UserError(f"{path}: PFM can store [H,W] or [H,W,3] arrays, got shape {tuple(array.shape)}")
    height, width = array.shape[:2]
    header = f"{kind}\n{width} {height}\n-1.0\n".encode("ascii")
    body = np.ascontiguousarray(array[::-1]).astype("<f4").tobytes()
    atomic_write(path, header + body, user_path=False)
