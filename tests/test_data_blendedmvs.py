"""BlendedMVS reader: hand-made files in the real format, groups at a compiled shape, broken files."""

import logging
import struct

import numpy as np
import pytest
from PIL import Image

from vggt_et.data.blendedmvs import (
    DEFAULT_CALIBRATION_SCENES,
    calibration_scenes,
    list_scenes,
    load_group,
    open_scene,
    sample_view_groups,
)
from vggt_et.data.cams import read_cam_txt, read_pair_txt
from vggt_et.data.pfm import read_pfm, write_pfm
from vggt_et.data.synthetic import write_synthetic_dataset
from vggt_et.outputs.geometry import project_points, unproject_depth_map_to_point_map
from vggt_et.utils.errors import UserError

CAM_TXT = """extrinsic
0.970263 0.00747983 0.241939 -191.02
-0.0147429 0.999493 0.0282234 3.28832
-0.241605 -0.030951 0.969881 22.5401
0.0 0.0 0.0 1.0

intrinsic
2892.33 0 823.204
0 2883.18 619.072
0 0 1

425.0 2.5 192 905.0
"""

PAIR_TXT = """3
0
2 1 1250.5 2 830.25
1
2 0 1250.5 2 97.0
2
1 0 830.25
"""


def test_pfm_hand_made_little_and_big_endian(tmp_path):
    rows_bottom_up = [[4.0, 5.0, 6.0], [1.0, 2.0, 3.0]]  # PFM stores the bottom row first
    (tmp_path / "le.pfm").write_bytes(b"Pf\n3 2\n-1.0\n" + struct.pack("<6f", *sum(rows_bottom_up, [])))
    (tmp_path / "be.pfm").write_bytes(b"Pf\n3 2\n1.0\n" + struct.pack(">6f", *sum(rows_bottom_up, [])))
    expected = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], dtype=np.float32)
    for name in ("le.pfm", "be.pfm"):
        depth = read_pfm(tmp_path / name)
        assert depth.dtype == np.float32 and depth.flags.writeable
        np.testing.assert_array_equal(depth, expected)


def test_pfm_write_read_round_trip_and_truncation(tmp_path):
    rgb = np.random.default_rng(0).normal(size=(4, 5, 3)).astype(np.float32)
    write_pfm(tmp_path / "rgb.pfm", rgb)
    np.testing.assert_array_equal(read_pfm(tmp_path / "rgb.pfm"), rgb)
    depth = np.arange(12, dtype=np.float32).reshape(3, 4)
    write_pfm(tmp_path / "d.pfm", depth)
    data = (tmp_path / "d.pfm").read_bytes()
    assert data.startswith(b"Pf\n4 3\n-1.0\n") and len(data) == len(b"Pf\n4 3\n-1.0\n") + 48
    (tmp_path / "cut.pfm").write_bytes(data[:-5])
    with pytest.raises(UserError, match=r"cut\.pfm.*truncated"):
        read_pfm(tmp_path / "cut.pfm")
    (tmp_path / "junk.pfm").write_bytes(b"P6\n4 3\n255\n" + bytes(36))
    with pytest.raises(UserError, match=r"junk\.pfm.*not a PFM"):
        read_pfm(tmp_path / "junk.pfm")


def test_cam_txt_as_blendedmvs_ships_it(tmp_path):
    (tmp_path / "00000000_cam.txt").write_text(CAM_TXT)
    cam = read_cam_txt(tmp_path / "00000000_cam.txt")
    assert cam.extrinsic.shape == (4, 4) and cam.intrinsic.shape == (3, 3)
    assert cam.extrinsic[0, 3] == -191.02 and cam.extrinsic[2, 0] == -0.241605
    np.testing.assert_array_equal(cam.extrinsic[3], [0, 0, 0, 1])
    np.testing.assert_array_equal(cam.intrinsic, [[2892.33, 0, 823.204], [0, 2883.18, 619.072], [0, 0, 1]])
    assert (cam.depth_min, cam.depth_interval, cam.depth_num, cam.depth_max) == (425.0, 2.5, 192, 905.0)


@pytest.mark.parametrize("drop_line", [3, 8])  # an extrinsic row, an intrinsic row
def test_cam_txt_missing_row_names_the_file(tmp_path, drop_line):
    lines = CAM_TXT.splitlines()
    del lines[drop_line]
    (tmp_path / "00000007_cam.txt").write_text("\n".join(lines))
    with pytest.raises(UserError, match=r"00000007_cam\.txt.*(extrinsic|intrinsic)"):
        read_cam_txt(tmp_path / "00000007_cam.txt")


def test_pair_txt(tmp_path):
    (tmp_path / "pair.txt").write_text(PAIR_TXT)
    assert read_pair_txt(tmp_path / "pair.txt") == {
        0: [(1, 1250.5), (2, 830.25)],
        1: [(0, 1250.5), (2, 97.0)],
        2: [(0, 830.25)],
    }
    (tmp_path / "short.txt").write_text(PAIR_TXT[:-12])
    with pytest.raises(UserError, match=r"short\.txt.*truncated"):
        read_pair_txt(tmp_path / "short.txt")


def _hand_made_scene(root, name="5a3ca9cb270f0e3f14d0eddb", size_wh=(64, 48)):
    """Three views written file by file in the BlendedMVS layout (plus a masked copy to ignore)."""
    width, height = size_wh
    scene = root / name
    for sub in ("blended_images", "cams", "rendered_depth_maps"):
        (scene / sub).mkdir(parents=True)
    rng = np.random.default_rng(0)
    cam_text = CAM_TXT.replace("2892.33 0 823.204", f"60 0 {width / 2}").replace(
        "2883.18 619.072", f"61 {height / 2}"
    )
    depths = []
    for view in range(3):
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(
            scene / "blended_images" / f"{view:08d}.jpg", quality=95
        )
        (scene / "cams" / f"{view:08d}_cam.txt").write_text(cam_text)
        depth = rng.uniform(400, 900, size=(height, width)).astype(np.float32)
        depth[0, :5] = 0.0
        write_pfm(scene / "rendered_depth_maps" / f"{view:08d}.pfm", depth)
        depths.append(depth)
    Image.new("RGB", (width, height)).save(scene / "blended_images" / "00000000_masked.jpg")
    (scene / "cams" / "pair.txt").write_text(PAIR_TXT)
    return scene, depths


def test_hand_made_scene_loads_what_was_written(tmp_path):
    _, depths = _hand_made_scene(tmp_path, size_wh=(56, 42))  # already a compiled shape: no resampling
    (scene,) = list_scenes(tmp_path)
    assert scene.view_ids == [0, 1, 2]  # the _masked copy is not a view
    group = load_group(scene, [2, 0], 42, 56)
    assert group.images.shape == (2, 3, 42, 56) and group.view_ids == [2, 0]
    expected_image = np.asarray(Image.open(scene.image_path(2)), dtype=np.float32) / 255
    np.testing.assert_array_equal(group.images[0].permute(1, 2, 0).numpy(), expected_image)
    np.testing.assert_array_equal(group.depths.numpy(), np.stack([depths[2], depths[0]]))
    cam = read_cam_txt(scene.cam_path(0))
    np.testing.assert_allclose(group.extrinsics[1].numpy(), cam.extrinsic[:3], rtol=1e-6)
    np.testing.assert_allclose(group.intrinsics[1].numpy(), cam.intrinsic, rtol=1e-6)
    assert scene.pairs[0] == [(1, 1250.5), (2, 830.25)]


def test_calibration_scene_choice(tmp_path, caplog):
    _hand_made_scene(tmp_path, name=DEFAULT_CALIBRATION_SCENES[1])
    _hand_made_scene(tmp_path, name="0123456789abcdef01234567")
    assert [s.name for s in calibration_scenes(tmp_path)] == [DEFAULT_CALIBRATION_SCENES[1]]
    other = tmp_path / "other"
    _hand_made_scene(other, name="0123456789abcdef01234567")
    with caplog.at_level(logging.WARNING):
        assert [s.name for s in calibration_scenes(other)] == ["0123456789abcdef01234567"]
    assert "none of the 8 default calibration scenes" in caplog.text


def test_view_group_sampling(tmp_path):
    _hand_made_scene(tmp_path)
    (scene,) = list_scenes(tmp_path)
    runs = sample_view_groups(scene, 2, "consecutive", n_groups=5, seed=3)
    assert len(runs) == 5 and all(b == a + 1 for a, b in runs)
    assert runs == sample_view_groups(scene, 2, "consecutive", n_groups=5, seed=3)
    groups = sample_view_groups(scene, 3, "pairs", n_groups=3, seed=0)
    expected = {0: [0, 1, 2], 1: [1, 0, 2], 2: [2, 0, 1]}  # pair.txt order; view 2 lists only 0, filler 1
    assert sorted(g[0] for g in groups) == [0, 1, 2]
    assert all(g == expected[g[0]] for g in groups)
    with pytest.raises(UserError, match="3 views"):
        sample_view_groups(scene, 4)
    with pytest.raises(UserError, match="strategy"):
        sample_view_groups(scene, 2, "random")


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(UserError, match="dataset root not found"):
        list_scenes(tmp_path / "nowhere")
    with pytest.raises(UserError, match="no BlendedMVS scenes"):
        list_scenes(tmp_path)
    scene_dir, _ = _hand_made_scene(tmp_path)
    with pytest.raises(UserError, match="scene not found"):
        open_scene(tmp_path, "5a00000000000000000000ff")
    with pytest.raises(UserError, match="scene not found"):
        list_scenes(tmp_path, ["5a00000000000000000000ff"])
    empty = tmp_path / "empty" / "blended_images"
    empty.mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(empty / "00000000_masked.jpg")
    with pytest.raises(UserError, match="empty scene"):
        open_scene(tmp_path, "empty")

    scene = open_scene(tmp_path, scene_dir.name)
    data = scene.depth_path(1).read_bytes()
    scene.depth_path(1).write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match=r"00000001\.pfm.*truncated"):
        load_group(scene, [0, 1], 42, 56)
    scene.depth_path(1).write_bytes(data)
    scene.cam_path(2).write_text("\n".join(CAM_TXT.splitlines()[:3]))
    with pytest.raises(UserError, match=r"00000002_cam\.txt"):
        load_group(scene, [0, 2], 42, 56)
    scene.cam_path(2).unlink()
    with pytest.raises(UserError, match=r"00000002_cam\.txt.*not found"):
        load_group(scene, [2], 42, 56)
    load_group(scene, [0, 1], 42, 56)  # the repaired views still load


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    write_synthetic_dataset(root, n_scenes=1, n_views=4, height=96, width=128, seed=7)
    return root


@pytest.mark.parametrize(("shape_hw", "mode"), [((70, 84), "crop"), ((56, 112), "crop"), ((98, 98), "pad")])
def test_intrinsics_and_depth_follow_resize_and_crop(synthetic_root, shape_hw, mode):
    """A surface point lands on the transformed pixel, and the loaded depth there is its depth."""
    (scene,) = list_scenes(synthetic_root)
    group = load_group(scene, [1, 3], *shape_hw, mode=mode)
    assert group.images.shape == (2, 3, *shape_hw) and group.depths.shape == (2, *shape_hw)
    for i, view in enumerate(group.view_ids):
        cam = scene.cam(view)
        depth = read_pfm(scene.depth_path(view))
        np.testing.assert_allclose(group.extrinsics[i].numpy(), cam.extrinsic[:3], atol=1e-6)
        world = unproject_depth_map_to_point_map(depth[None], cam.extrinsic[None, :3], cam.intrinsic[None])[0]
        valid = depth > 0
        uv_orig = np.stack(np.meshgrid(np.arange(128), np.arange(96)), -1)[valid]
        uv_new, z = project_points(world[valid], group.extrinsics[i].numpy(), group.intrinsics[i].numpy())
        np.testing.assert_allclose(uv_new, group.transforms[i].apply_to_pixels(uv_orig), atol=2e-3)
        np.testing.assert_allclose(z, depth[valid], rtol=1e-5)
        # Loaded depth at the nearest output pixel: equal up to the surface slope across half a pixel.
        h, w = shape_hw
        cols, rows = np.round(uv_new[:, 0]).astype(int), np.round(uv_new[:, 1]).astype(int)
        inside = (cols >= 0) & (cols < w) & (rows >= 0) & (rows < h)
        sampled = group.depths[i].numpy()[rows[inside], cols[inside]]
        close = np.abs(sampled - z[inside]) < 0.03 * z[inside]
        assert inside.sum() > 0.3 * h * w and close.mean() > 0.9
    if mode == "pad":
        assert (group.depths[:, 0] == 0).all() and (
            group.images[:, :, 0] == 1
        ).all()  # white padding, no depth
