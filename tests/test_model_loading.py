"""Checkpoint loading (safetensors and official .pt) and an end-to-end run of `tiny`."""

from __future__ import annotations

import logging

import pytest
import torch
from safetensors.torch import save_file

import vggt_et
from vggt_et.model.loading import fitting_preset
from vggt_et.utils.errors import UserError


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.rand(1, 2, 3, 42, 56, generator=torch.Generator().manual_seed(1))


def _run(model: torch.nn.Module, images: torch.Tensor) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        return model(images)


def test_tiny_end_to_end_from_safetensors(tmp_path, tiny_model, images) -> None:
    path = tmp_path / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in tiny_model.state_dict().items()}, str(path))
    loaded = vggt_et.load_model("tiny", str(path))
    ours, ref = _run(loaded, images), _run(tiny_model, images)
    shapes = {
        "pose_enc": (1, 2, 9),
        "depth": (1, 2, 42, 56, 1),
        "depth_conf": (1, 2, 42, 56),
        "world_points": (1, 2, 42, 56, 3),
        "world_points_conf": (1, 2, 42, 56),
    }
    for key, shape in shapes.items():
        assert ours[key].shape == shape
        assert torch.equal(ours[key], ref[key]), key
    assert (ours["depth"] > 0).all() and (ours["depth_conf"] > 1).all()
    assert len(ours["pose_enc_list"]) == 4
    assert torch.equal(ours["images"], images)


def test_official_pt_state_dict_in_half_precision_is_cast(tmp_path, tiny_model, images) -> None:
    path = tmp_path / "model.pt"
    torch.save({k: v.to(torch.bfloat16) for k, v in tiny_model.state_dict().items()}, path)
    loaded = vggt_et.load_model("tiny", str(path))
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    expected = {k: v.to(torch.bfloat16).float() for k, v in tiny_model.state_dict().items()}
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in expected.items())


def test_track_head_keys_are_ignored_with_a_notice(tmp_path, caplog) -> None:
    full = vggt_et.load_model("tiny", random_weights=True, track_head=True)
    path = tmp_path / "with_track.safetensors"
    save_file({k: v.contiguous() for k, v in full.state_dict().items()}, str(path))
    with caplog.at_level(logging.INFO, logger="vggt_et"):
        model = vggt_et.load_model("tiny", str(path))
    assert model.track_head is None
    assert "ignoring" in caplog.text
    assert vggt_et.load_model("tiny", str(path), track_head=True).track_head is not None


def test_mismatched_checkpoint_names_offenders_and_fitting_preset(tmp_path, tiny_model) -> None:
    path = tmp_path / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in tiny_model.state_dict().items()}, str(path))
    with pytest.raises(UserError) as err:
        vggt_et.load_model("small", str(path))
    message = str(err.value)
    assert "does not fit preset 'small'" in message and "fits preset 'tiny'" in message
    assert "\n" not in message

    state = {k: v for k, v in tiny_model.state_dict().items() if "camera_head" not in k}
    state["aggregator.extra"] = torch.zeros(1)
    assert fitting_preset(state) is None
    bad = tmp_path / "bad.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(bad))
    with pytest.raises(UserError, match=r"missing camera_head\..*no built-in preset fits"):
        vggt_et.load_model("tiny", str(bad))


def test_unreadable_or_missing_checkpoint(tmp_path) -> None:
    with pytest.raises(UserError, match="not found"):
        vggt_et.load_model("tiny", str(tmp_path / "nope.safetensors"))
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="cannot read checkpoint"):
        vggt_et.load_model("tiny", str(junk))
    with pytest.raises(UserError, match="either a checkpoint or random_weights"):
        vggt_et.load_model("tiny")


def test_seeded_random_weights_are_reproducible(images) -> None:
    a = vggt_et.load_model("tiny", random_weights=True, seed=3)
    b = vggt_et.load_model("tiny", random_weights=True, seed=3)
    c = vggt_et.load_model("tiny", random_weights=True, seed=4)
    assert torch.equal(_run(a, images)["depth"], _run(b, images)["depth"])
    assert not torch.equal(_run(a, images)["depth"], _run(c, images)["depth"])


def test_single_frame_and_4d_input(tiny_model) -> None:
    frames = torch.rand(1, 3, 28, 28)
    out = _run(tiny_model, frames)  # [S, 3, H, W] gains a batch dim like the official model
    assert out["depth"].shape == (1, 1, 28, 28, 1)
