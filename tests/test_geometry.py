"""Camera geometry: quaternion/matrix identities, pose-encoding round trips, unprojection, PLY/PNG output."""

import math

import numpy as np
import pytest
import torch
from PIL import Image

from vggt_et.outputs.geometry import (
    closed_form_inverse_se3,
    depth_to_camera_points,
    depth_to_color_png,
    extri_intri_to_pose_encoding,
    mat_to_quat,
    pose_encoding_to_extri_intri,
    project_points,
    quat_to_mat,
    unproject_depth_map_to_point_map,
    write_ply,
)


def _rodrigues(axis: np.ndarray, angle: float) -> np.ndarray:
    """Rotation matrix from axis-angle, an independent formula to check quat_to_mat against."""
    axis = axis / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + math.sin(angle) * k + (1 - math.cos(angle)) * k @ k


def _random_rotations(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    axes = rng.normal(size=(n, 3))
    angles = rng.uniform(0, np.pi, n)
    rots = np.stack([_rodrigues(a, t) for a, t in zip(axes, angles, strict=True)])
    quats = np.concatenate(
        [
            axes / np.linalg.norm(axes, axis=1, keepdims=True) * np.sin(angles / 2)[:, None],
            np.cos(angles / 2)[:, None],
        ],
        axis=1,
    )
    return rots, quats


def test_quat_to_mat_matches_axis_angle_and_ignores_quaternion_scale():
    rots, quats = _random_rotations(np.random.default_rng(0), 32)
    np.testing.assert_allclose(quat_to_mat(quats), rots, atol=1e-12)
    np.testing.assert_allclose(quat_to_mat(3.5 * quats), rots, atol=1e-12)
    as_torch = quat_to_mat(torch.from_numpy(quats).float())
    assert isinstance(as_torch, torch.Tensor) and as_torch.dtype == torch.float32
    torch.testing.assert_close(as_torch, torch.from_numpy(rots).float(), atol=1e-6, rtol=0)


def test_mat_to_quat_inverts_quat_to_mat_including_half_turns():
    rots, quats = _random_rotations(np.random.default_rng(1), 64)
    out = mat_to_quat(rots)
    np.testing.assert_allclose(out, quats, atol=1e-10)  # angles < pi give w > 0: no sign ambiguity
    half_turns = np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [1, 1, 0, 0], [0, 1, -1, 1e-9]], float)
    half_turns /= np.linalg.norm(half_turns, axis=1, keepdims=True)
    recovered = mat_to_quat(quat_to_mat(half_turns))
    np.testing.assert_allclose(np.abs(np.sum(recovered * half_turns, axis=1)), 1.0, atol=1e-8)
    np.testing.assert_allclose(quat_to_mat(recovered), quat_to_mat(half_turns), atol=1e-8)
    assert (recovered[:, 3] >= 0).all()
    np.testing.assert_allclose(np.linalg.norm(recovered, axis=1), 1.0, atol=1e-12)


def _random_cameras(rng: np.random.Generator, n: int, hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    rots, _ = _random_rotations(rng, n)
    extrinsics = np.concatenate([rots, rng.normal(0, 3, size=(n, 3, 1))], axis=2)
    intrinsics = np.zeros((n, 3, 3))
    intrinsics[:, 0, 0] = rng.uniform(200, 600, n)
    intrinsics[:, 1, 1] = rng.uniform(200, 600, n)
    intrinsics[:, 0, 2], intrinsics[:, 1, 2], intrinsics[:, 2, 2] = hw[1] / 2, hw[0] / 2, 1
    return extrinsics, intrinsics


@pytest.mark.parametrize("as_torch", [False, True])
def test_pose_encoding_round_trip(as_torch):
    hw = (392, 518)
    extrinsics, intrinsics = _random_cameras(np.random.default_rng(2), 6, hw)
    extrinsics, intrinsics = extrinsics.reshape(2, 3, 3, 4), intrinsics.reshape(2, 3, 3, 3)
    if as_torch:
        extrinsics, intrinsics = torch.from_numpy(extrinsics), torch.from_numpy(intrinsics)
    enc = extri_intri_to_pose_encoding(extrinsics, intrinsics, hw)
    assert tuple(enc.shape) == (2, 3, 9) and isinstance(enc, torch.Tensor) == as_torch
    e2, k2 = pose_encoding_to_extri_intri(enc, hw)
    np.testing.assert_allclose(np.asarray(e2), np.asarray(extrinsics), atol=1e-10)
    np.testing.assert_allclose(np.asarray(k2), np.asarray(intrinsics), atol=1e-8)
    enc2 = extri_intri_to_pose_encoding(e2, k2, hw)
    np.testing.assert_allclose(np.asarray(enc2), np.asarray(enc), atol=1e-10)


def test_pose_encoding_known_values():
    # Identity rotation, 90 degree FoV both ways: f = half the image size, principal point at the centre.
    enc = torch.tensor([[1.0, 2.0, 3.0, 0.0, 0.0, 0.0, 2.0, math.pi / 2, math.pi / 2]])
    extrinsics, intrinsics = pose_encoding_to_extri_intri(enc, (100, 200))
    torch.testing.assert_close(extrinsics[0], torch.tensor([[1.0, 0, 0, 1], [0, 1, 0, 2], [0, 0, 1, 3]]))
    torch.testing.assert_close(intrinsics[0], torch.tensor([[100.0, 0, 100], [0, 50, 50], [0, 0, 1]]))


def test_closed_form_inverse_se3_keeps_shape_and_inverts():
    extrinsics, _ = _random_cameras(np.random.default_rng(3), 4, (10, 10))
    inverse = closed_form_inverse_se3(extrinsics)
    assert inverse.shape == (4, 3, 4)
    square = np.concatenate([extrinsics, np.tile([[[0, 0, 0, 1.0]]], (4, 1, 1))], axis=1)
    inverse_square = closed_form_inverse_se3(torch.from_numpy(square))
    assert tuple(inverse_square.shape) == (4, 4, 4)
    np.testing.assert_allclose(square @ inverse_square.numpy(), np.tile(np.eye(4), (4, 1, 1)), atol=1e-10)


def test_unprojection_hand_computed_conventions():
    # f = 100, principal point (2, 1); depth 5 at column u=4, row v=3 -> camera point (0.1, 0.1, 5).
    k = np.array([[[100.0, 0, 2], [0, 100.0, 1], [0, 0, 1]]])
    depth = np.zeros((1, 6, 8, 1))
    depth[0, 3, 4, 0] = 5.0
    cam = depth_to_camera_points(depth, k)
    np.testing.assert_allclose(cam[0, 3, 4], [0.1, 0.1, 5.0], rtol=1e-6)
    # Camera-from-world: 90 degrees about z, then T. X_cam = R X_world + T  =>  X_world = R^T (X_cam - T).
    rot = np.array([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]])
    extrinsic = np.concatenate([rot, [[1.0], [2.0], [3.0]]], axis=1)[None]
    world = unproject_depth_map_to_point_map(depth, extrinsic, k)
    assert world.shape == (1, 6, 8, 3) and world.dtype == np.float32
    np.testing.assert_allclose(world[0, 3, 4], rot.T @ (np.array([0.1, 0.1, 5.0]) - [1, 2, 3]), rtol=1e-6)


def test_unprojected_plane_depth_lands_on_the_plane_and_reprojects():
    rng = np.random.default_rng(4)
    height, width = 24, 32
    extrinsics, intrinsics = _random_cameras(rng, 3, (height, width))
    normal, offset = np.array([0.2, -0.3, 0.93]), 1.5
    normal /= np.linalg.norm(normal)
    depth = np.zeros((3, height, width, 1))
    v, u = np.mgrid[0:height, 0:width].astype(float)
    for i in range(3):
        rot, trans = extrinsics[i, :, :3], extrinsics[i, :, 3]
        center = -rot.T @ trans
        rays = np.stack(
            [(u - width / 2) / intrinsics[i, 0, 0], (v - height / 2) / intrinsics[i, 1, 1], np.ones_like(u)],
            -1,
        )
        rays_world = rays @ rot  # R^T r
        depth[i, ..., 0] = (offset - normal @ center) / (
            rays_world @ normal
        )  # t along a z=1 ray is the depth
    world = unproject_depth_map_to_point_map(depth, extrinsics, intrinsics).astype(np.float64)
    in_front = (depth[..., 0] > 0) & (depth[..., 0] < 50)  # skip grazing hits: float32 output
    assert in_front.mean() > 0.2
    np.testing.assert_allclose((world @ normal)[in_front], offset, atol=1e-4 * np.abs(depth).max())
    for i in range(3):
        uv, z = project_points(world[i], extrinsics[i], intrinsics[i])
        ok = in_front[i]
        np.testing.assert_allclose(uv[ok], np.stack([u, v], -1)[ok], atol=1e-2)  # float32 points
        np.testing.assert_allclose(z[ok], depth[i, ..., 0][ok], rtol=1e-5)


def _read_ply(path) -> tuple[list[str], np.ndarray]:
    data = path.read_bytes()
    end = data.index(b"end_header\n") + len(b"end_header\n")
    header = data[:end].decode("ascii").splitlines()
    types = {"float": "<f4", "uchar": "u1"}
    fields = [(line.split()[2], types[line.split()[1]]) for line in header if line.startswith("property")]
    count = int(next(line for line in header if line.startswith("element vertex")).split()[2])
    body = np.frombuffer(data[end:], dtype=fields)
    assert len(body) == count  # nothing after the vertices
    return header, body


def test_write_ply_binary_readable_back(tmp_path):
    rng = np.random.default_rng(5)
    points = rng.normal(size=(2, 5, 3)).astype(np.float32)
    points[1, 2, 0] = np.nan  # dropped
    colors = rng.integers(0, 256, size=(2, 5, 3), dtype=np.uint8)
    assert write_ply(tmp_path / "cloud.ply", points, colors) == 9
    header, body = _read_ply(tmp_path / "cloud.ply")
    assert header[:3] == ["ply", "format binary_little_endian 1.0", "element vertex 9"]
    keep = np.isfinite(points.reshape(-1, 3)).all(1)
    np.testing.assert_array_equal(np.stack([body["x"], body["y"], body["z"]], 1), points.reshape(-1, 3)[keep])
    np.testing.assert_array_equal(
        np.stack([body["red"], body["green"], body["blue"]], 1), colors.reshape(-1, 3)[keep]
    )
    write_ply(tmp_path / "plain.ply", torch.from_numpy(points[0]))
    header, body = _read_ply(tmp_path / "plain.ply")
    assert body.dtype.names == ("x", "y", "z") and len(body) == 5
    assert [p.name for p in tmp_path.iterdir()] and not any(
        p.name.startswith(".") for p in tmp_path.iterdir()
    )


def test_depth_to_color_png(tmp_path):
    depth = np.tile(np.linspace(1.0, 10.0, 20), (8, 1))
    depth[0, 0] = 0.0  # no depth -> black
    conf = np.ones_like(depth)
    conf[7, 19] = 0.0  # least confident -> black
    rgb = depth_to_color_png(tmp_path / "depth.png", depth, conf, conf_drop_fraction=0.01)
    stored = np.asarray(Image.open(tmp_path / "depth.png"))
    np.testing.assert_array_equal(stored, rgb)
    assert stored.shape == (8, 20, 3)
    assert (stored[0, 0] == 0).all() and (stored[7, 19] == 0).all()
    assert np.abs(stored[4, 1].astype(int) - stored[4, 18].astype(int)).sum() > 100  # near and far differ
