"""VGGT-Ω: preset against the official manifest, loading with the bias-mask fold, RoPE and register
attention against hand-computed cases, and an end-to-end run of `vggt-omega-tiny`."""

from __future__ import annotations

import json
import math

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import save_file
from torch import nn

import vggt_et
from tests.conftest import REPO
from vggt_et.cli import main
from vggt_et.model.loading import build_model, fitting_preset
from vggt_et.model.omega_aggregator import register_attention
from vggt_et.model.omega_layers import AxialRotaryEmbedding, rotate_patch_tokens
from vggt_et.utils.errors import UserError

OMEGA_MANIFEST = REPO.parent / "shared" / "vggt_omega_1b_state_dict_manifest.json"
TINY = "vggt-omega-tiny"


@pytest.fixture(scope="module")
def omega_manifest() -> dict:
    return json.loads(OMEGA_MANIFEST.read_text())


@pytest.fixture(scope="module")
def tiny_omega() -> nn.Module:
    return vggt_et.load_model(TINY, random_weights=True, seed=0)


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.rand(1, 2, 3, 32, 48, generator=torch.Generator().manual_seed(1))  # not square


def _run(model: nn.Module, images: torch.Tensor) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        return model(images)


def test_omega_1b_matches_manifest_tensor_by_tensor(omega_manifest: dict) -> None:
    model = build_model("vggt-omega-1b", device="meta")
    ours = {name: list(t.shape) for name, t in model.state_dict().items()}
    assert list(ours.items()) == list(omega_manifest["tensors"].items())  # names, shapes and order
    params = dict(model.named_parameters())
    assert sorted(set(ours) - set(params)) == sorted(omega_manifest["buffers"])
    assert len(omega_manifest["buffers"]) == 78
    assert sum(p.numel() for p in params.values()) == omega_manifest["learnable_params"] == 1_143_814_185


def test_info_reports_omega_counts() -> None:
    result = CliRunner().invoke(main, ["info", "--preset", "vggt-omega-1b", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert (report["total_params"], report["tensors"], report["buffers"]) == (1_143_814_185, 1411, 78)


def test_axial_rope_tables_by_hand() -> None:
    """head dim 8 → periods (1, 10); a 1×2 grid normalised by its longer side (2): row coordinate
    2·(0.5/2) − 1 = −0.5 for both tokens, column −0.5 and +0.5."""
    rope = AxialRotaryEmbedding(head_dim=8, base=100.0)
    assert torch.allclose(rope.periods, torch.tensor([1.0, 10.0]))
    sin, cos = rope(1, 2)
    pi = math.pi
    angles = torch.tensor(
        [[-pi, -pi / 10, -pi, -pi / 10], [-pi, -pi / 10, pi, pi / 10]]  # [row/1, row/10, col/1, col/10]
    ).tile(2)
    torch.testing.assert_close(sin, angles.sin(), rtol=0, atol=1e-6)
    torch.testing.assert_close(cos, angles.cos(), rtol=0, atol=1e-6)


def test_rope_leaves_prefix_tokens_unrotated() -> None:
    rope = AxialRotaryEmbedding(head_dim=8, base=100.0)(1, 2)
    x = torch.zeros(1, 1, 3, 8)  # one prefix token, then the two patch tokens
    x[..., 3] = 1.0  # e3: the column angle with period 10 rotates it into e7
    out = rotate_patch_tokens(x, rope)
    assert torch.equal(out[..., 0, :], x[..., 0, :])
    expected = torch.zeros(2, 8)
    expected[:, 3] = torch.cos(torch.tensor([-math.pi / 10, math.pi / 10]))
    expected[:, 7] = torch.sin(torch.tensor([-math.pi / 10, math.pi / 10]))
    torch.testing.assert_close(out[0, 0, 1:], expected, rtol=0, atol=1e-6)


class _SequenceMean(nn.Module):
    """Every output token = the mean over the sequence: shows which tokens attend together."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=1, keepdim=True).expand_as(x)


def test_register_attention_mixes_prefix_tokens_across_frames_only() -> None:
    tokens = torch.arange(2 * 5, dtype=torch.float32).reshape(1, 2, 5, 1)  # 2 frames, 5 tokens
    out = register_attention(_SequenceMean(), tokens, prefix=2)
    prefix_mean = tokens[:, :, :2].mean()  # (0 + 1 + 5 + 6) / 4
    assert float(prefix_mean) == 3.0
    assert torch.equal(out[:, :, :2], torch.full((1, 2, 2, 1), 3.0))
    assert torch.equal(out[:, :, 2:], tokens[:, :, 2:])


def test_register_layers_pass_patch_tokens_through(tiny_omega, images) -> None:
    """At a register-attention layer the inter-frame half of the patch tokens equals the frame half."""
    config = tiny_omega.config
    with torch.no_grad():
        outputs, start = tiny_omega.aggregator(images)
    half = config.embed_dim
    for layer in config.cached_layers:
        frame, inter = outputs[layer][..., start:, :half], outputs[layer][..., start:, half:]
        assert torch.equal(frame, inter) == (layer in config.register_attention_layers), layer
    assert all(out is None for i, out in enumerate(outputs) if i not in config.cached_layers)


def test_tiny_omega_from_safetensors_folds_the_k_bias_mask(tmp_path, tiny_omega, images) -> None:
    """A checkpoint whose K biases are non-zero behind a 0 mask loads to the same outputs: the mask is
    multiplied in at load, and the built model carries no mask buffer."""
    state = {k: v.clone() for k, v in tiny_omega.state_dict().items()}
    masked = [k for k in state if k.endswith("qkv.bias_mask")]
    assert len(masked) == 2 * 4 + 2 + 1  # frame + inter-frame blocks, backbone blocks, camera trunk
    generator = torch.Generator().manual_seed(2)
    for key in masked:
        bias = state[key.replace("bias_mask", "bias")]
        assert torch.equal(bias * state[key], bias)  # random init: K bias already zero
        state[key.replace("bias_mask", "bias")] = bias + (1 - state[key]) * torch.randn(
            bias.shape, generator=generator
        )
    path = tmp_path / "omega_tiny.safetensors"
    save_file(state, str(path))
    loaded = vggt_et.load_model(TINY, str(path))
    assert not [name for name, _ in loaded.named_buffers() if "bias_mask" in name]
    ours, ref = _run(loaded, images), _run(tiny_omega, images)
    shapes = {
        "pose_enc": (1, 2, 9),
        "depth": (1, 2, 32, 48, 1),
        "depth_conf": (1, 2, 32, 48),
        "camera_and_register_tokens": (1, 2, 4, 128),
    }
    for key, shape in shapes.items():
        assert ours[key].shape == shape
        assert torch.isfinite(ours[key]).all()
        assert torch.equal(ours[key], ref[key]), key
    assert (ours["depth"] > 0).all() and (ours["depth_conf"] > 1).all()
    assert (ours["pose_enc"][..., 7:] >= 0.01).all()
    assert fitting_preset(state) == TINY


def test_omega_checkpoint_for_a_vggt_preset_names_the_fitting_preset(tmp_path, tiny_omega) -> None:
    path = tmp_path / "omega.safetensors"
    save_file(dict(tiny_omega.state_dict()), str(path))
    with pytest.raises(UserError, match="it fits preset 'vggt-omega-tiny'"):
        vggt_et.load_model("tiny", str(path))


def test_official_pt_loads_with_weights_only(tmp_path, tiny_omega, images) -> None:
    path = tmp_path / "model.pt"
    torch.save({k: v.to(torch.bfloat16) for k, v in tiny_omega.state_dict().items()}, path)
    loaded = vggt_et.load_model(TINY, str(path))
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    assert torch.isfinite(_run(loaded, images)["depth"]).all()


def test_non_finite_mask_is_refused(tmp_path, tiny_omega) -> None:
    """The official constructor fills bias_mask with NaN until its init runs: such a file must not load."""
    state = dict(tiny_omega.state_dict())
    key = next(k for k in state if k.endswith("bias_mask"))
    state[key] = torch.full_like(state[key], float("nan"))
    path = tmp_path / "nan_mask.safetensors"
    save_file(state, str(path))
    with pytest.raises(UserError, match="bias_mask holds NaN"):
        vggt_et.load_model(TINY, str(path))


def test_random_weights_are_seeded_and_finite(images) -> None:
    a = vggt_et.load_model(TINY, random_weights=True, seed=3)
    b = vggt_et.load_model(TINY, random_weights=True, seed=3)
    c = vggt_et.load_model(TINY, random_weights=True, seed=4)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.isfinite(v).all() for v in sa.values())
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(
        sa["aggregator.frame_blocks.0.attn.qkv.weight"], sc["aggregator.frame_blocks.0.attn.qkv.weight"]
    )
    assert torch.equal(_run(a, images)["depth"], _run(b, images)["depth"])


def test_omega_has_no_point_head() -> None:
    with pytest.raises(UserError, match="no point head"):
        vggt_et.load_model(TINY, random_weights=True, heads=["depth", "point"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--height", "42"], "not a positive multiple of 16"),
        (["--height", "32", "--outputs", "depth,points"], "has no points output; choose from depth, camera"),
        (["--height", "32", "--quant", "w4-fisher", "--w4-budget", "1.5"], "--w4-budget is the share"),
    ],
)
def test_omega_compile_bad_input_is_one_line_and_exit_2(args, message, tmp_path) -> None:
    base = ["compile", "--preset", TINY, "--random-weights", "--width", "48", "-o", str(tmp_path / "m.pte")]
    result = CliRunner().invoke(main, base + args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not list(tmp_path.iterdir())


def test_half_precision_model_stays_half(tiny_omega, images) -> None:
    """RoPE tables follow the model's dtype, so q, k and v share it (SDPA needs it; this failed for
    --quant fp16 before)."""
    half = vggt_et.load_model(TINY, random_weights=True, seed=0).to(torch.float16)
    out, ref = _run(half, images.half()), _run(tiny_omega, images)
    for key in ("depth", "pose_enc"):
        assert out[key].dtype == torch.float16
        assert float((out[key].float() - ref[key]).norm() / ref[key].norm()) < 1e-2, key
