"""Camera geometry: VGGT pose encoding <-> (extrinsics, intrinsics), depth unprojection, PLY output.

Conventions (VGGT_REFERENCE.md §6): extrinsics are camera-from-world [R | T] in OpenCV axes
(x right, y down, z forward), X_cam = R X_world + T; quaternions are scalar-last (x, y, z, w);
pixel (u, v) = (column, row) integer indices, pixel centres, no +0.5.
The pose functions accept torch tensors or numpy arrays and return the same kind; the point-map
functions work in numpy (like the official utilities) and accept either.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from vggt_et.outputs.visualize import depth_to_color_png
from vggt_et.utils.files import atomic_write

__all__ = [
    "closed_form_inverse_se3",
    "depth_to_camera_points",
    "depth_to_color_png",
    "extri_intri_to_pose_encoding",
    "mat_to_quat",
    "pose_encoding_to_extri_intri",
    "project_points",
    "quat_to_mat",
    "unproject_depth_map_to_point_map",
    "write_ply",
]


def _as_torch(x) -> tuple[torch.Tensor, bool]:
    """(tensor, was_numpy): numpy/list input becomes a float64 tensor, to be converted back later."""
    if isinstance(x, torch.Tensor):
        return x, False
    array = np.asarray(x)
    return torch.from_numpy(array.astype(np.float64) if array.dtype.kind != "f" else array), True


def _as_numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def quat_to_mat(quat):
    """[..., 4] quaternions (x, y, z, w), not necessarily unit, -> [..., 3, 3] rotation matrices."""
    q, was_numpy = _as_torch(quat)
    x, y, z, w = q.unbind(-1)
    s = 2.0 / (q * q).sum(-1)
    rows = (
        1 - s * (y * y + z * z), s * (x * y - z * w), s * (x * z + y * w),
        s * (x * y + z * w), 1 - s * (x * x + z * z), s * (y * z - x * w),
        s * (x * z - y * w), s * (y * z + x * w), 1 - s * (x * x + y * y),
    )  # fmt: skip
    mat = torch.stack(rows, dim=-1).reshape(q.shape[:-1] + (3, 3))
    return mat.numpy() if was_numpy else mat


def mat_to_quat(mat):
    """[..., 3, 3] rotation matrices -> [..., 4] unit quaternions (x, y, z, w) with w >= 0.

    Shepperd's method: of the four algebraically equivalent formulas, use the one built on the
    largest of 4w², 4x², 4y², 4z², so no division by a near-zero number happens (180° rotations
    included). Selection is a gather, not boolean indexing, so shapes never depend on data.
    """
    m, was_numpy = _as_torch(mat)
    m00, m01, m02 = m[..., 0, 0], m[..., 0, 1], m[..., 0, 2]
    m10, m11, m12 = m[..., 1, 0], m[..., 1, 1], m[..., 1, 2]
    m20, m21, m22 = m[..., 2, 0], m[..., 2, 1], m[..., 2, 2]
    # Each candidate is proportional to (x, y, z, w), scaled by 4w, 4x, 4y or 4z respectively.
    candidates = torch.stack(
        [
            torch.stack([m21 - m12, m02 - m20, m10 - m01, 1 + m00 + m11 + m22], -1),
            torch.stack([1 + m00 - m11 - m22, m01 + m10, m02 + m20, m21 - m12], -1),
            torch.stack([m01 + m10, 1 - m00 + m11 - m22, m12 + m21, m02 - m20], -1),
            torch.stack([m02 + m20, m12 + m21, 1 - m00 - m11 + m22, m10 - m01], -1),
        ],
        dim=-2,
    )
    strength = torch.stack(
        [1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22], -1
    )
    best = strength.argmax(-1, keepdim=True)[..., None].expand(*strength.shape[:-1], 1, 4)
    quat = torch.gather(candidates, -2, best).squeeze(-2)
    quat = quat / torch.linalg.vector_norm(quat, dim=-1, keepdim=True)
    quat = torch.where(quat[..., 3:4] < 0, -quat, quat)
    return quat.numpy() if was_numpy else quat


def extri_intri_to_pose_encoding(extrinsics, intrinsics, image_size_hw: tuple[int, int]):
    """[..., 3|4, 4] extrinsics and [..., 3, 3] intrinsics -> [..., 9] "absT_quaR_FoV" encoding.

    Encoding: (tx, ty, tz, qx, qy, qz, qw, fov_h, fov_w), fov_h = 2 atan((H/2)/fy), fov_w likewise.
    """
    e, was_numpy = _as_torch(extrinsics)
    k, _ = _as_torch(intrinsics)
    k = k.to(e.dtype)
    height, width = image_size_hw
    fov_h = 2 * torch.atan((height / 2) / k[..., 1, 1])
    fov_w = 2 * torch.atan((width / 2) / k[..., 0, 0])
    quat = mat_to_quat(e[..., :3, :3])
    enc = torch.cat([e[..., :3, 3], quat, fov_h[..., None], fov_w[..., None]], dim=-1)
    return enc.numpy() if was_numpy else enc


def pose_encoding_to_extri_intri(pose_enc, image_size_hw: tuple[int, int]):
    """[..., 9] encoding -> ([..., 3, 4] extrinsics, [..., 3, 3] intrinsics) as VGGT decodes it.

    The quaternion need not be unit (the camera head does not normalise it); cx = W/2, cy = H/2.
    """
    enc, was_numpy = _as_torch(pose_enc)
    height, width = image_size_hw
    rot = quat_to_mat(enc[..., 3:7])
    extrinsics = torch.cat([rot, enc[..., 0:3, None]], dim=-1)
    fy = (height / 2) / torch.tan(enc[..., 7] / 2)
    fx = (width / 2) / torch.tan(enc[..., 8] / 2)
    intrinsics = torch.zeros(enc.shape[:-1] + (3, 3), dtype=enc.dtype, device=enc.device)
    intrinsics[..., 0, 0] = fx
    intrinsics[..., 1, 1] = fy
    intrinsics[..., 0, 2] = width / 2
    intrinsics[..., 1, 2] = height / 2
    intrinsics[..., 2, 2] = 1.0
    if was_numpy:
        return extrinsics.numpy(), intrinsics.numpy()
    return extrinsics, intrinsics


def closed_form_inverse_se3(se3):
    """Invert rigid transforms [..., 3, 4] or [..., 4, 4] as [R^T | -R^T T]; same shape and kind out."""
    t, was_numpy = _as_torch(se3)
    rot_t = t[..., :3, :3].transpose(-1, -2)
    trans = -(rot_t @ t[..., :3, 3:4])
    out = torch.cat([rot_t, trans], dim=-1)
    if t.shape[-2] == 4:
        bottom = torch.zeros_like(t[..., 3:4, :])
        bottom[..., 3] = 1
        out = torch.cat([out, bottom], dim=-2)
    return out.numpy() if was_numpy else out


def depth_to_camera_points(depth, intrinsics) -> np.ndarray:
    """Depth [..., H, W] (or [..., H, W, 1]) and intrinsics [..., 3, 3] -> camera-frame points [..., H, W, 3].

    X_cam = ((u - cx) d / fx, (v - cy) d / fy, d) with integer pixel coordinates u (column), v (row).
    Skew is ignored, as in the official code. float32 out.
    """
    depth = _as_numpy(depth).astype(np.float64)
    k = _as_numpy(intrinsics).astype(np.float64)
    if depth.ndim >= 3 and depth.shape[-1] == 1:
        depth = depth[..., 0]
    height, width = depth.shape[-2:]
    v, u = np.meshgrid(np.arange(height, dtype=np.float64), np.arange(width, dtype=np.float64), indexing="ij")
    fx, fy = k[..., 0, 0][..., None, None], k[..., 1, 1][..., None, None]
    cx, cy = k[..., 0, 2][..., None, None], k[..., 1, 2][..., None, None]
    x = (u - cx) * depth / fx
    y = (v - cy) * depth / fy
    return np.stack(np.broadcast_arrays(x, y, depth), axis=-1).astype(np.float32)


def unproject_depth_map_to_point_map(depth, extrinsics, intrinsics) -> np.ndarray:
    """Depth [S, H, W, 1] (or [S, H, W]) -> world points [S, H, W, 3] (float32), as VGGT does.

    X_world = R^T (X_cam - T) with camera-from-world extrinsics [S, 3, 4] (or [S, 4, 4]).
    """
    cam = depth_to_camera_points(depth, intrinsics).astype(np.float64)
    cam_from_world = _as_numpy(extrinsics).astype(np.float64)
    world_from_cam = closed_form_inverse_se3(cam_from_world)
    rot, trans = world_from_cam[..., :3, :3], world_from_cam[..., :3, 3]
    world = np.einsum("...ij,...hwj->...hwi", rot, cam) + trans[..., None, None, :]
    return world.astype(np.float32)


def project_points(points_world, extrinsics, intrinsics) -> tuple[np.ndarray, np.ndarray]:
    """Project world points [..., 3] with one camera ([3|4, 4], [3, 3]) -> (uv [..., 2], depth [...]).

    uv are pixel-centre coordinates (u column, v row); depth is z in the camera frame.
    """
    points = _as_numpy(points_world).astype(np.float64)
    e = _as_numpy(extrinsics).astype(np.float64)
    k = _as_numpy(intrinsics).astype(np.float64)
    cam = points @ e[:3, :3].T + e[:3, 3]
    z = cam[..., 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        uv = (cam @ k.T)[..., :2] / z[..., None]
    return uv, z


def write_ply(path: str | os.PathLike, points, colors=None) -> int:
    """Write points [..., 3] (and colours [..., 3], uint8 or float in [0, 1]) as binary little-endian PLY.

    Points that are not finite are dropped (viewers choke on them). Written atomically. Returns the
    number of vertices written.
    """
    xyz = _as_numpy(points).reshape(-1, 3).astype("<f4")
    keep = np.isfinite(xyz).all(axis=1)
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    rgb = None
    if colors is not None:
        rgb = _as_numpy(colors).reshape(-1, 3)
        if rgb.shape[0] != xyz.shape[0]:
            raise ValueError(f"write_ply: {rgb.shape[0]} colours for {xyz.shape[0]} points")
        if rgb.dtype != np.uint8:
            rgb = np.clip(np.round(rgb.astype(np.float64) * 255), 0, 255).astype(np.uint8)
        fields += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
    vertices = np.empty(int(keep.sum()), dtype=fields)
    for axis, name in enumerate("xyz"):
        vertices[name] = xyz[keep, axis]
    if rgb is not None:
        for channel, name in enumerate(("red", "green", "blue")):
            vertices[name] = rgb[keep, channel]
    header = ["ply", "format binary_little_endian 1.0", f"element vertex {len(vertices)}"]
    header += [f"property float {name}" for name in "xyz"]
    if rgb is not None:
        header += [f"property uchar {name}" for name in ("red", "green", "blue")]
    header.append("end_header")
    atomic_write(path, ("\n".join(header) + "\n").encode("ascii") + vertices.tobytes(), user_path=False)
    return len(vertices)
