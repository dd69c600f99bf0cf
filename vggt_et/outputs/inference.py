"""Running compiled VGGT programs on images: inputs at the compiled shape, named outputs, and what a
person wants to look at (depth .npy and colour PNG per frame, a PLY point cloud)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from vggt_et.options import METADATA_METHOD
from vggt_et.utils.errors import UserError
from vggt_et.utils.files import atomic_write

POINT_CLOUD = "points.ply"
POINTS_SOURCE = "points_source.txt"


@dataclass(frozen=True)
class ProgramInfo:
    """What `vggt-et compile` recorded inside the .pte (a constant method holding JSON)."""

    preset: str
    backend: str
    quant: str
    input_shape: tuple[int, ...]
    outputs: tuple[str, ...]
    # Frame count → method; {frames: "forward"} for a fixed-shape program (older programs record none).
    frame_methods: dict[int, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.frame_methods:
            object.__setattr__(self, "frame_methods", {self.input_shape[-4]: "forward"})

    @property
    def frames(self) -> int:
        return self.input_shape[-4]

    @property
    def frame_counts(self) -> tuple[int, ...]:
        return tuple(sorted(self.frame_methods))

    def accepted_frames(self) -> str:
        counts = self.frame_counts
        if len(counts) == 1:
            return f"{counts[0]} frames"
        contiguous = counts == tuple(range(counts[0], counts[-1] + 1))
        return f"{counts[0]}..{counts[-1]} frames" if contiguous else f"{', '.join(map(str, counts))} frames"

    @property
    def method(self) -> str:
        """The method that runs `frames` frames."""
        return self.frame_methods[self.frames]

    def with_frames(self, frames: int) -> ProgramInfo:
        """This program seen at `frames` frames (its method and input shape); refuses counts it lacks."""
        if frames not in self.frame_methods:
            raise UserError(
                f"this program takes {self.accepted_frames()}, got {frames}; "
                f"compile with --max-frames {max(frames, self.frames)} for more"
            )
        shape = list(self.input_shape)
        shape[-4] = frames
        return replace(self, input_shape=tuple(shape))

    @property
    def height(self) -> int:
        return self.input_shape[-2]

    @property
    def width(self) -> int:
        return self.input_shape[-1]

    @property
    def batch_dim(self) -> bool:
        """False for rank-4 programs (QNN): [S, 3, H, W] in, outputs without the leading 1."""
        return len(self.input_shape) == 5


def _runtime_error(exc: Exception) -> UserError:
    return UserError(str(exc))


def program_info(path: str | Path) -> ProgramInfo:
    from vggt_et.runtime.program import ProgramError, PteProgram

    try:
        raw = PteProgram(path, METADATA_METHOD).run([])[0]
    except ProgramError as exc:
        raise UserError(
            f"{path} is not a vggt-et program ({exc}); compile it with `vggt-et compile`"
        ) from None
    meta = json.loads(bytes(np.asarray(raw, dtype=np.uint8)).decode())
    methods = {int(k): v for k, v in meta.get("frame_methods", {}).items()}
    return ProgramInfo(
        meta["preset"],
        meta["backend"],
        meta["quant"],
        tuple(meta["input_shape"]),
        tuple(meta["outputs"]),
        methods,
    )


def run_program(path: str | Path, images: np.ndarray, *, threads: int | None = None) -> dict[str, np.ndarray]:
    """images [1, S, 3, H, W] float32 in [0, 1] → {output name: array}, by the method for S frames."""
    from vggt_et.runtime.program import ProgramError, PteProgram

    info = program_info(path).with_frames(images.shape[-4])
    inputs = np.ascontiguousarray(images.reshape(info.input_shape), dtype=np.float32)
    try:
        arrays = PteProgram(path, info.method, threads=threads).run([inputs])
    except ProgramError as exc:
        raise UserError(str(exc)) from None
    if not info.batch_dim:
        arrays = [a[None] for a in arrays]
    return dict(zip(info.outputs, arrays, strict=True))


def load_images(paths: list[str], info: ProgramInfo) -> np.ndarray:
    """Official preprocessing (crop mode) to the program's compiled shape → [1, S, 3, H, W]."""
    from vggt_et.data.preprocess import load_images_to_shape

    if len(paths) not in info.frame_methods:
        raise UserError(f"this program takes {info.accepted_frames()}, got {len(paths)} images")
    tensor, _ = load_images_to_shape(paths, info.height, info.width)
    return tensor.unsqueeze(0).numpy().astype(np.float32)


def parse_intrinsics(text: str, frames: int) -> np.ndarray:
    """'fx,fy,cx,cy' (pixels, at the compiled resolution) → [S, 3, 3]; focal lengths must be positive."""
    try:
        fx, fy, cx, cy = (float(v) for v in text.split(","))
    except ValueError:
        raise UserError(f"--intrinsics {text!r} must be four numbers fx,fy,cx,cy") from None
    if not all(np.isfinite([fx, fy, cx, cy])) or fx <= 0 or fy <= 0:
        raise UserError(
            f"--intrinsics {text!r}: fx and fy must be positive and all four finite (pixels at the "
            "compiled resolution)"
        )
    K = np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1]], dtype=np.float32)
    return np.repeat(K[None], frames, axis=0)


def planned_output_names(info: ProgramInfo, has_intrinsics: bool) -> list[str]:
    """The file names `write_outputs` will write for this program (checked against inputs up front)."""
    names = [f"{name}.npy" for name in info.outputs]
    if "depth" in info.outputs:
        for s in range(info.frames):
            names += [f"depth_{s:02d}.npy", f"depth_{s:02d}.png"]
    can_unproject = "depth" in info.outputs and ("pose_enc" in info.outputs or has_intrinsics)
    if "world_points" in info.outputs or can_unproject:
        names.append(POINT_CLOUD)
    return [*names, POINTS_SOURCE]


def point_cloud(outputs: dict[str, np.ndarray], info: ProgramInfo, intrinsics: np.ndarray | None):
    """World points [S, H, W, 3] and where they came from, or (None, reason)."""
    from vggt_et.outputs.geometry import pose_encoding_to_extri_intri, unproject_depth_map_to_point_map

    if "world_points" in outputs:
        return outputs["world_points"][0], "point head"
    if "depth" not in outputs:
        return None, "the program has neither depth nor points"
    depth = outputs["depth"][0]
    if "pose_enc" in outputs:
        extrinsics, predicted = pose_encoding_to_extri_intri(
            outputs["pose_enc"][0], (info.height, info.width)
        )
        K = intrinsics if intrinsics is not None else predicted
        return unproject_depth_map_to_point_map(
            depth, extrinsics, K
        ), "depth unprojected with predicted cameras"
    if intrinsics is not None:
        identity = np.repeat(np.eye(3, 4, dtype=np.float32)[None], info.frames, axis=0)
        return unproject_depth_map_to_point_map(
            depth, identity, intrinsics
        ), "depth unprojected per camera frame"
    return None, "depth-only program: pass --intrinsics fx,fy,cx,cy or compile with --outputs depth,camera"


def write_outputs(
    outputs: dict[str, np.ndarray],
    images: np.ndarray,
    info: ProgramInfo,
    out_dir: Path,
    intrinsics: np.ndarray | None,
) -> list[Path]:
    """depth_XX.npy + depth_XX.png per frame, points.ply, and every raw output as .npy."""
    from vggt_et.outputs.geometry import write_ply
    from vggt_et.outputs.visualize import depth_to_color_png

    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    def save_npy(name: str, array: np.ndarray) -> None:
        written.append(atomic_write(out_dir / f"{name}.npy", lambda f: np.save(f, array)))

    for name, array in outputs.items():
        save_npy(name, array)
    if "depth" in outputs:
        for s in range(info.frames):
            depth = outputs["depth"][0, s, ..., 0]
            conf = outputs.get("depth_conf", None)
            save_npy(f"depth_{s:02d}", depth)
            png = out_dir / f"depth_{s:02d}.png"
            depth_to_color_png(png, depth, None if conf is None else conf[0, s])
            written.append(png)
    points, source = point_cloud(outputs, info, intrinsics)
    if points is not None:
        colors = (np.clip(images[0].transpose(0, 2, 3, 1), 0, 1) * 255).astype(np.uint8)
        ply = out_dir / POINT_CLOUD
        write_ply(ply, points.reshape(-1, 3), colors.reshape(-1, 3))
        written.append(ply)
    atomic_write(out_dir / POINTS_SOURCE, source + "\n", user_path=False)
    written.append(out_dir / POINTS_SOURCE)
    return written
