"""BlendedMVS / MVSNet camera files: `NNNNNNNN_cam.txt` and `pair.txt`, reading and writing.

cam.txt: "extrinsic", 4 rows of 4 numbers (camera-from-world, OpenCV), blank, "intrinsic", 3 rows
of 3 numbers, blank, "depth_min depth_interval [depth_num depth_max]".
pair.txt: N, then per view a line with its id and a line "K id1 score1 id2 score2 ...".
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vggt_et.utils.errors import UserError
from vggt_et.utils.files import atomic_write


@dataclass(frozen=True)
class CamFile:
    """One view's camera: 4x4 camera-from-world extrinsic, 3x3 intrinsic, MVS depth range."""

    extrinsic: np.ndarray
    intrinsic: np.ndarray
    depth_min: float | None = None
    depth_interval: float | None = None
    depth_num: int | None = None
    depth_max: float | None = None


def _read_matrix(lines: list[str], start: int, rows: int, cols: int, path: Path, name: str) -> np.ndarray:
    """Parse `rows` lines of `cols` numbers that follow line index `start` (the keyword line)."""
    values = []
    for i in range(rows):
        index = start + 1 + i
        parts = lines[index].split() if index < len(lines) else []
        try:
            row = [float(v) for v in parts]
        except ValueError:
            row = []
        if len(row) != cols:
            raise UserError(
                f"{path}: {name} row {i + 1} should hold {cols} numbers, found {lines[index].strip()!r} "
                f"({rows} rows of {cols} expected); the camera file is truncated or corrupt, re-extract it"
                if index < len(lines)
                else f"{path}: {name} has {i} of {rows} rows; the camera file is truncated, re-extract it"
            )
        values.append(row)
    return np.array(values, dtype=np.float64)


def read_cam_txt(path: str | os.PathLike) -> CamFile:
    """Parse a BlendedMVS `NNNNNNNN_cam.txt`; the depth-range line is optional."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: camera file not found; the scene's cams/ folder is incomplete")
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    keywords = [line.strip().lower() for line in lines]
    for word in ("extrinsic", "intrinsic"):
        if word not in keywords:
            raise UserError(f"{path}: no '{word}' line; this is not a BlendedMVS/MVSNet camera file")
    ext_at, int_at = keywords.index("extrinsic"), keywords.index("intrinsic")
    extrinsic = _read_matrix(lines, ext_at, 4, 4, path, "extrinsic")
    intrinsic = _read_matrix(lines, int_at, 3, 3, path, "intrinsic")
    depth_values: list[float] = []
    for line in lines[int_at + 4 :]:
        if line.strip():
            try:
                depth_values = [float(v) for v in line.split()]
            except ValueError:
                raise UserError(f"{path}: depth range line {line.strip()!r} is not numbers") from None
            break
    padded = depth_values + [None] * (4 - len(depth_values))
    return CamFile(
        extrinsic,
        intrinsic,
        padded[0],
        padded[1],
        None if padded[2] is None else int(padded[2]),
        padded[3],
    )


def format_cam_txt(cam: CamFile) -> str:
    """The text of a cam.txt in the layout BlendedMVS ships."""
    lines = ["extrinsic"]
    lines += [" ".join(repr(float(v)) for v in row) for row in np.asarray(cam.extrinsic).reshape(4, 4)]
    lines += ["", "intrinsic"]
    lines += [" ".join(repr(float(v)) for v in row) for row in np.asarray(cam.intrinsic).reshape(3, 3)]
    depth = [cam.depth_min, cam.depth_interval, cam.depth_num, cam.depth_max]
    depth_text = " ".join(str(v) if isinstance(v, int) else repr(float(v)) for v in depth if v is not None)
    lines += ["", depth_text, ""]
    return "\n".join(lines)


def write_cam_txt(path: str | os.PathLike, cam: CamFile) -> None:
    """Write a cam.txt atomically."""
    atomic_write(path, format_cam_txt(cam), user_path=False)


def read_pair_txt(path: str | os.PathLike) -> dict[int, list[tuple[int, float]]]:
    """Parse `pair.txt` -> {view id: [(neighbour id, score), ...] best first, as listed}."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: pair list not found; the scene's cams/ folder is incomplete")
    tokens = path.read_text(encoding="utf-8", errors="replace").split()
    pos = 0

    def take(kind: type):
        nonlocal pos
        if pos >= len(tokens):
            raise UserError(f"{path}: pair list ends early; the file is truncated, re-extract it")
        try:
            value = kind(tokens[pos])
        except ValueError:
            raise UserError(f"{path}: pair list token {tokens[pos]!r} is not a number") from None
        pos += 1
        return value

    pairs: dict[int, list[tuple[int, float]]] = {}
    for _ in range(take(int)):
        view = take(int)
        count = take(int)
        pairs[view] = [(take(int), take(float)) for _ in range(count)]
    return pairs


def write_pair_txt(path: str | os.PathLike, pairs: dict[int, list[tuple[int, float]]]) -> None:
    """Write `pair.txt` atomically (views in key order)."""
    lines = [str(len(pairs))]
    for view, neighbours in pairs.items():
        lines.append(str(view))
        lines.append(" ".join([str(len(neighbours))] + [f"{n} {score:.6g}" for n, score in neighbours]))
    atomic_write(path, "\n".join(lines) + "\n", user_path=False)
