"""Hadamard rotation folding: fp32 outputs unchanged, outliers spread, norms rewritten, bad specs caught."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from vggt_et.quantizers.rotation import (
    RotationSpec,
    StreamRotation,
    fold_residual_rotation,
    fold_value_output_rotation,
    outlier_ratio,
    random_hadamard,
)
from vggt_et.quantizers.toy_transformer import make_outlier_transformer, toy_rotation_spec, toy_samples


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Small matmuls: one intra-op thread avoids spin-wait overhead on the shared 2-core machines."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).detach().norm() / b.detach().norm())


def test_random_hadamard_is_orthogonal_and_seeded() -> None:
    h = random_hadamard(64, seed=3)
    torch.testing.assert_close(h @ h.T, torch.eye(64, dtype=torch.float64))
    assert torch.allclose(h.abs(), torch.full_like(h, 1 / 8))  # every entry +-1/sqrt(n): maximal mixing
    assert torch.equal(h, random_hadamard(64, seed=3)) and not torch.equal(h, random_hadamard(64, seed=4))
    with pytest.raises(ValueError, match="power-of-two"):
        random_hadamard(48)


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
    with pytest.raises(ValueError, match="input features"):
        fold_residual_rotation(model, RotationSpec(dim=128, norm_readers=[(block.norm1, [block.mlp.fc2])]))
    with pytest.raises(ValueError, match="output channels"):
        fold_residual_rotation(model, RotationSpec(dim=128, writers=[block.mlp.fc1]))
    with pytest.raises(ValueError, match="not a submodule"):
        fold_residual_rotation(model, RotationSpec(dim=128, writers=[nn.Linear(4, 128)]))
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
