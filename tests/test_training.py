"""Training: the official losses on hand-computed cases, the ground-truth normalisation, the schedule, a few
steps on `tiny` lowering the loss, checkpoints that load back, and `vggt-et train` refusing bad input."""

from __future__ import annotations

import math
import subprocess

import numpy as np
import pytest
import torch

from vggt_et.data.synthetic import SceneVariety, synthetic_sample
from vggt_et.outputs.geometry import extri_intri_to_pose_encoding, unproject_depth_map_to_point_map
from vggt_et.training.loop import TrainConfig, evaluate, learning_rate, make_batch, save_checkpoint, train
from vggt_et.training.losses import (
    LossConfig,
    camera_loss,
    confidence_regression,
    drop_above_quantile,
    gradient_term,
    normal_term,
    normalize_scene,
    vggt_loss,
)

SMALL = SceneVariety(height=42, width=56)


def _maps(seed: int = 0, b: int = 1, s: int = 2, h: int = 12, w: int = 16, c: int = 1) -> torch.Tensor:
    return torch.rand(b, s, h, w, c, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) + 1


def test_perfect_prediction_costs_the_log_confidence_floor() -> None:
    target = _maps()
    mask = torch.ones(target.shape[:-1], dtype=torch.bool)
    conf = torch.full(mask.shape, 2.5, dtype=torch.float64)
    parts = confidence_regression(target.clone(), target, mask, conf, LossConfig(), "grad")
    assert parts["reg"] == 0 and parts["grad"] == 0
    assert parts["conf"].item() == pytest.approx(-0.2 * math.log(2.5), rel=1e-12)


def test_constant_offset_costs_no_gradient_term_and_its_size_elsewhere() -> None:
    target = _maps(c=3)
    mask = torch.ones(target.shape[:-1], dtype=torch.bool)
    mask[:, :, :3] = False  # masked pixels count nowhere
    offset = torch.tensor([0.3, -0.4, 0.0], dtype=torch.float64)  # |offset| = 0.5
    conf = torch.full(mask.shape, 1.5, dtype=torch.float64)
    parts = confidence_regression(target + offset, target, mask, conf, LossConfig(valid_range=-1), "grad")
    assert parts["grad"].item() == pytest.approx(0.0, abs=1e-12)
    assert parts["reg"].item() == pytest.approx(0.5, rel=1e-12)
    assert parts["conf"].item() == pytest.approx(0.5 * 1.5 - 0.2 * math.log(1.5), rel=1e-12)


def test_gradient_term_by_hand() -> None:
    # errors along one row 0, 1, 3: horizontal differences 1 + 2 over 3 valid values; no vertical pairs
    pred = torch.tensor([0.0, 1.0, 3.0], dtype=torch.float64).reshape(1, 1, 3, 1)
    mask = torch.ones(1, 1, 3, dtype=torch.bool)
    assert gradient_term(pred, torch.zeros_like(pred), mask).item() == pytest.approx(1.0)
    mask[0, 0, 2] = False  # the pair (1, 3) is gone and the masked error is not counted
    assert gradient_term(pred, torch.zeros_like(pred), mask).item() == pytest.approx(0.5)


def _plane(normal_tilt: float, h: int = 8, w: int = 8) -> torch.Tensor:
    v, u = torch.meshgrid(
        torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij"
    )
    return torch.stack([u, v, math.tan(normal_tilt) * u], -1)[None]  # z rises along u: normal tilted about y


def test_normal_term_ignores_translation_and_scale_and_measures_tilt() -> None:
    flat = _plane(0.0)
    mask = torch.ones(flat.shape[:-1], dtype=torch.bool)
    assert normal_term(2.0 * flat + 5.0, flat, mask).item() == pytest.approx(0.0, abs=1e-7)
    tilt = math.radians(30)
    assert normal_term(_plane(tilt), flat, mask).item() == pytest.approx(1 - math.cos(tilt), rel=1e-6)


def test_camera_loss_weights_later_iterations_more() -> None:
    extrinsics = torch.eye(4, dtype=torch.float64)[:3].expand(1, 2, 3, 4).clone()
    extrinsics[0, 1, :, 3] = torch.tensor([0.5, 0.0, 0.1])
    intrinsics = torch.tensor([[50.0, 0, 28], [0, 50, 21], [0, 0, 1]], dtype=torch.float64).expand(1, 2, 3, 3)
    batch = {
        "images": torch.zeros(1, 2, 3, 42, 56),
        "extrinsics": extrinsics,
        "intrinsics": intrinsics,
        "valid": torch.ones(1, 2, 42, 56, dtype=torch.bool),
    }
    target = extri_intri_to_pose_encoding(extrinsics, intrinsics, (42, 56))
    early = target.clone()
    early[..., :3] += 0.1  # translation off by 0.1 in the first of two iterations
    parts = camera_loss([early, target.clone()], batch, LossConfig())
    assert parts["loss_T"].item() == pytest.approx(
        0.6 * 0.1 / 2
    )  # gamma^(2-0-1) * 0.1, averaged over 2 stages
    assert parts["loss_R"].item() == 0 and parts["loss_FL"].item() == 0
    assert parts["loss_camera"].item() == pytest.approx(0.03)
    batch["valid"][:, 0] = False  # first frame without valid pixels: the sample does not count
    assert camera_loss([early], batch, LossConfig())["loss_camera"].item() == 0


def test_quantile_drops_the_top_losses() -> None:
    losses = torch.linspace(0, 1, 2000)
    kept = drop_above_quantile(losses, 0.98)
    assert len(kept) == 1959 and kept.max() < losses[1959]
    assert len(drop_above_quantile(losses[:1000], 0.98)) == 1000  # too few to filter


def test_normalised_ground_truth_is_in_the_first_camera_at_unit_scale() -> None:
    sample = synthetic_sample(3, SMALL, n_views=3)
    batch = {k: getattr(sample, k)[None].double() for k in ("extrinsics", "depth", "world_points")}
    valid = sample.valid[None]
    extrinsics, depth, points = normalize_scene(
        batch["extrinsics"], batch["depth"], batch["world_points"], valid
    )
    torch.testing.assert_close(extrinsics[0, 0], torch.eye(4, dtype=torch.float64)[:3], atol=1e-6, rtol=0)
    assert points[valid].norm(dim=-1).mean().item() == pytest.approx(1.0, rel=1e-3)
    unprojected = unproject_depth_map_to_point_map(
        depth[0].numpy(), extrinsics[0].numpy(), sample.intrinsics.numpy()
    )
    np.testing.assert_allclose(unprojected[valid[0].numpy()], points[valid].numpy(), atol=2e-5)


def test_objective_is_the_weighted_sum_of_its_parts(tiny_model) -> None:
    config = LossConfig(camera_weight=2.0, depth_weight=0.5, point_weight=3.0)
    batch = make_batch(TrainConfig(variety=SMALL), 0)
    tiny_model.train()
    try:
        with torch.no_grad():
            parts = vggt_loss(tiny_model(batch["images"]), batch, config)
    finally:
        tiny_model.eval()
    expected = 2.0 * parts["loss_camera"] + sum(
        weight * (parts[f"loss_conf_{n}"] + parts[f"loss_reg_{n}"] + parts[f"loss_grad_{n}"])
        for n, weight in (("depth", 0.5), ("point", 3.0))
    )
    assert parts["objective"].item() == pytest.approx(expected.item(), rel=1e-6)
    assert parts["loss_conf_depth"] > -0.2 * math.log(1e6)  # finite, confidence-weighted


def test_learning_rate_warms_up_then_decays() -> None:
    config = TrainConfig(steps=100, lr=1e-3, warmup=0.1)
    rates = [learning_rate(step, config) for step in range(100)]
    assert rates[0] == pytest.approx(1e-8) and rates[10] == pytest.approx(1e-3)
    assert all(a < b for a, b in zip(rates[:10], rates[1:11], strict=True))
    assert all(a > b for a, b in zip(rates[10:-1], rates[11:], strict=True)) and rates[-1] < 1e-5


def test_a_few_steps_on_tiny_lower_the_loss(tmp_path, one_thread) -> None:
    import vggt_et

    model = vggt_et.load_model("tiny", random_weights=True, seed=0, heads=["camera", "depth", "point"])
    config = TrainConfig(preset="tiny", steps=10, lr=1e-3, scenes=2, variety=SMALL, seed=0)
    batches = [make_batch(config, i) for i in range(2)]
    before = [evaluate(model, b)["objective"] for b in batches]
    result = train(model, config, progress=False)
    after = [evaluate(model, b)["objective"] for b in batches]
    assert len(result.history) == 10 and all(math.isfinite(h["objective"]) for h in result.history)
    assert sum(after) < 0.85 * sum(before), (before, after)
    # The checkpoint loads back into the preset exactly (fp16 storage, cast back by the loader).
    path = tmp_path / "tiny.safetensors"
    save_checkpoint(model, path, fp16=True, metadata={"preset": "tiny"})
    loaded = vggt_et.load_model("tiny", checkpoint=path)
    state = model.state_dict()
    assert loaded.state_dict().keys() == state.keys()
    for name, tensor in loaded.state_dict().items():
        torch.testing.assert_close(tensor, state[name].half().float(), rtol=0, atol=0)


def _listing(folder) -> dict:
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir()}


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (["--preset", "vggt-omega-tiny"], "vggt-omega-tiny"),
        (["--preset", "tiny", "--width", "50"], "--width 50"),
        (["--preset", "tiny", "--min-views", "3", "--max-views", "2"], "--max-views 2"),
        (["--preset", "tiny", "--steps", "0"], "--steps"),
        (["--preset", "tiny", "--curve", "{dir}/old.safetensors"], "--curve"),
        (["--preset", "tiny", "--checkpoint", "{dir}/old.safetensors"], "--checkpoint"),
    ],
)
def test_train_refuses_bad_input_with_one_line(args, names, tmp_path, vggt_et_cli) -> None:
    (tmp_path / "old.safetensors").write_bytes(b"mine")
    before = _listing(tmp_path)
    args = [a.format(dir=tmp_path) for a in args]
    output = "{dir}/old.safetensors" if "--curve" in args else "{dir}/new.safetensors"
    if "--checkpoint" in args:
        output = "{dir}/old.safetensors"
    proc = subprocess.run(
        [*vggt_et_cli, "train", *args, "-o", output.format(dir=tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and names in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr and _listing(tmp_path) == before
