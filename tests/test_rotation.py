"""Hadamard rotation folding: fp32 outputs unchanged, outliers spread, norms rewritten, bad specs caught."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from toy_outliers import make_outlier_transformer, toy_rotation_spec, toy_samples

from vggt_et.quantizers.rotation import (
    RotatedLayerNorm,
    RotationSpec,
    StreamRotation,
    fold_residual_rotation,
    fold_value_output_rotation,
    outlier_ratio,
    random_hadamard,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).detach().norm() / b.detach().norm())


def test_random_hadamard_is_orthogonal_and_seeded() -> None:
    h = random_hadamard(64, seed=3)
    torch.testing.assert_close(h @ h.T, torch.eye(64, dtype=torch.float64))
    assert torch.allclose(h.abs(), torch.full_like(h, 1 / 8))  # every entry +-1/sqrt(n): maximal mixing
    assert torch.equal(h, random_hadamard(64, seed=3)) and not torch.equal(h, random_hadamard(64, seed=4))
    with pytest.raises(ValueError, match="power-of-two"):
        random_hadamard(48)
    shaped = random_hadamard(64, seed=3, mean_to_first=True)
    torch.testing.assert_close(shaped @ shaped.T, torch.eye(64, dtype=torch.float64))
    expected = torch.zeros(64, dtype=torch.float64)
    expected[0] = 8.0
    torch.testing.assert_close(shaped @ torch.ones(64, dtype=torch.float64), expected)  # mean -> coordinate 0


def test_folding_keeps_fp32_outputs_and_spreads_outliers() -> None:
    model = make_outlier_transformer(seed=0)
    samples = toy_samples(2, seed=5)
    with torch.no_grad():
        reference = [model(x) for x in samples]
    rotated = copy.deepcopy(model)
    report = fold_residual_rotation(rotated, toy_rotation_spec(rotated))
    with torch.no_grad():
        for x, ref in zip(samples, reference, strict=True):
            out = rotated(x)
            for task in ref:
                assert _relative(out[task], ref[task]) <= 1e-5, task
    # Norms became affine-free RMSNorms, no parameters or modules were added.
    assert isinstance(rotated.blocks[0].norm1, nn.RMSNorm) and rotated.blocks[0].norm1.weight is None
    assert len(report.norms_rewritten) == 2 * len(model.blocks) + 1
    assert sum(p.numel() for p in rotated.parameters()) < sum(p.numel() for p in model.parameters())
    assert all(bool((block.ls1.gamma == 1).all()) for block in rotated.blocks)
    # Every reader linear is Hadamard-mixed: max/rms per row drops markedly (heavy tails -> near Gaussian).
    for name, before in report.outlier_ratio_before.items():
        assert report.outlier_ratio_after[name] < 0.75 * before, name
    # The embedding's outlier rows are spread over all channels.
    assert outlier_ratio(rotated.embed.weight.T) < 0.5 * outlier_ratio(model.embed.weight.T)


def test_value_output_rotation_with_fused_qkv() -> None:
    model = make_outlier_transformer(seed=1, depth=1)
    x = toy_samples(1, seed=6)[0]
    with torch.no_grad():
        ref = model(x)
    attn = model.blocks[0].attn
    before = attn.qkv.weight.detach().clone()
    fold_value_output_rotation(model, attn.qkv, attn.proj, head_dim=64, value_rows_start=256)
    with torch.no_grad():
        out = model(x)
    assert _relative(out["depth"], ref["depth"]) <= 1e-5
    assert torch.equal(attn.qkv.weight[:256], before[:256])  # q and k untouched
    assert not torch.allclose(attn.qkv.weight[256:], before[256:])
    with pytest.raises(ValueError, match="heads of 48"):
        fold_value_output_rotation(model, attn.qkv, attn.proj, head_dim=48, value_rows_start=256)


def test_incomplete_or_wrong_spec_is_caught() -> None:
    model = make_outlier_transformer(seed=0, depth=1)
    block = model.blocks[0]
    with pytest.raises(ValueError, match="only LayerNorm/RMSNorm"):
        fold_residual_rotation(model, RotationSpec(dim=128, norm_readers=[(block.attn, [])]))
    with pytest.raises(ValueError, match="inputs"):
        fold_residual_rotation(model, RotationSpec(dim=128, norm_readers=[(block.norm1, [block.mlp.fc2])]))
    with pytest.raises(ValueError, match="output channels"):
        fold_residual_rotation(model, RotationSpec(dim=128, writers=[block.mlp.fc1]))
    with pytest.raises(ValueError, match="not a submodule"):
        fold_residual_rotation(model, RotationSpec(dim=128, writers=[nn.Linear(4, 128)]))
    # Validation happens before any edit: a spec that fails late leaves the model untouched.
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    spec = toy_rotation_spec(model)
    spec.norm_readers = [*spec.norm_readers, (block.norm2, [block.mlp.fc2])]
    with pytest.raises(ValueError, match="inputs"):
        fold_residual_rotation(model, spec)
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    assert isinstance(block.norm1, nn.LayerNorm)
    # Leaving out a writer changes the function: the completeness requirement is real.
    partial = copy.deepcopy(model)
    spec = toy_rotation_spec(partial)
    spec.writers = spec.writers[:1]
    fold_residual_rotation(partial, spec)
    x = toy_samples(1)[0]
    with torch.no_grad():
        assert _relative(partial(x)["depth"], model(x)["depth"]) > 1e-2


def test_unfoldable_entry_uses_explicit_stream_rotation() -> None:
    model = make_outlier_transformer(seed=2, depth=1)
    x = toy_samples(1, seed=8)[0]
    with torch.no_grad():
        ref = model(x)
    spec = toy_rotation_spec(model)
    spec.entry_writers, spec.stream_parameters = [], []  # pretend the embedding cannot absorb H
    report = fold_residual_rotation(model, spec)
    entry = StreamRotation(report.stream_matrix)
    with torch.no_grad():
        h = entry(model.embed(x) + model.pos)
        for block in model.blocks:
            h = block(h)
        h = model.norm(h)
    assert _relative(model.depth_head(h), ref["depth"]) <= 1e-5
    with pytest.raises(ValueError, match="square"):
        StreamRotation(torch.ones(3, 4))


class ConvHeadModel(nn.Module):
    """Stream -> blocks -> two consumers: a LayerNorm + 1x1 conv head (DPT-like) over two concatenated copies
    of the stream, and a LayerNorm whose output is a new residual stream (camera-head-like trunk)."""

    def __init__(self, dim: int = 64) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Linear(8, dim)
        self.fc = nn.Linear(dim, dim)
        self.block_norm = nn.LayerNorm(dim)
        self.head_norm = nn.LayerNorm(2 * dim)
        self.project = nn.Conv2d(2 * dim, 16, kernel_size=1)
        self.trunk_norm = nn.LayerNorm(dim)
        self.trunk = nn.Linear(dim, dim)
        for norm in (self.block_norm, self.head_norm, self.trunk_norm):
            nn.init.normal_(norm.weight, 1.0, 0.3)
            nn.init.normal_(norm.bias, 0.0, 0.3)
        self.exit = nn.Identity()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.embed(x)
        h = h + self.fc(self.block_norm(h))
        both = self.head_norm(torch.cat([h, 2 * h], dim=-1))  # [B, N, 2C] with N = 4 x 4 patches
        image = both.transpose(1, 2).reshape(x.shape[0], -1, 4, 4)
        t = self.trunk_norm(self.exit(h))
        return self.project(image), t + self.trunk(t)


def _conv_head_spec(model: ConvHeadModel, fold_centring: bool) -> RotationSpec:
    return RotationSpec(
        dim=64,
        entry_writers=[model.embed],
        writers=[model.fc],
        norm_readers=[(model.block_norm, [model.fc]), (model.head_norm, [model.project])],
        fold_centring=fold_centring,
    )


def test_conv_readers_concatenated_streams_and_exit_rotation() -> None:
    x = torch.randn(2, 16, 8)
    model = ConvHeadModel()
    with torch.no_grad():
        ref_image, ref_trunk = model(x)
    report = fold_residual_rotation(model, _conv_head_spec(model, fold_centring=False))
    model.exit = report.exit_rotation()  # the trunk norm's output is a new residual stream: un-rotate first
    with torch.no_grad():
        image, trunk = model(x)
    assert _relative(image, ref_image) <= 1e-5
    assert _relative(trunk, ref_trunk) <= 1e-5
    assert isinstance(model.head_norm, RotatedLayerNorm) and isinstance(model.trunk_norm, nn.LayerNorm)
    assert report.exit_rotation(2).matrix.shape == (128, 128)
    # Folding the centring into the writers drops each stream's mean, which a norm over [h, 2h] still needs.
    folded = ConvHeadModel()
    fold_residual_rotation(folded, _conv_head_spec(folded, fold_centring=True))
    with torch.no_grad():
        assert _relative(folded(x)[0], ref_image) > 1e-3
    padded = nn.Conv2d(64, 4, kernel_size=3, padding=1)
    model.padded = padded
    with pytest.raises(ValueError, match="unpadded"):
        fold_residual_rotation(model, RotationSpec(dim=64, norm_readers=[(model.trunk_norm, [padded])]))


def test_toy_transformer_exact_without_folded_centring() -> None:
    model = make_outlier_transformer(seed=4, depth=2)
    x = toy_samples(1, seed=9)[0]
    with torch.no_grad():
        ref = model(x)
    spec = toy_rotation_spec(model)
    spec.fold_centring = False
    fold_residual_rotation(model, spec)
    with torch.no_grad():
        out = model(x)
    assert all(_relative(out[task], ref[task]) <= 1e-5 for task in ref)
    exported = torch.export.export(model.eval(), (x,))  # RotatedLayerNorm stays exportable
    with torch.no_grad():
        assert _relative(exported.module()(x)["depth"], ref["depth"]) <= 1e-5
