"""Fisher statistics: closed-form gradients on linear blocks, FGQ normalisation, save/load, heat map."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from vggt_et.quantizers.fisher import FisherStats, compute_block_fisher, plot_fisher_heatmap

pytestmark = pytest.mark.usefixtures("one_thread")


C = 6


class LinearChain(nn.Module):
    """Three bias-free linear blocks; head ``a`` reads the last block, head ``b`` the middle one."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.blocks = nn.ModuleList([nn.Linear(C, C, bias=False) for _ in range(3)])
        self.head_a = nn.Linear(C, 2, bias=False)
        self.head_b = nn.Linear(C, 3, bias=False)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h1 = self.blocks[0](x)
        h2 = self.blocks[1](h1)
        h3 = self.blocks[2](h2)
        return {"a": self.head_a(h3), "b": self.head_b(h2), "h3": h3}


def _samples() -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return [torch.randn(2, 5, C, generator=generator) for _ in range(3)]


def test_linear_chain_matches_closed_form() -> None:
    model = LinearChain()
    samples = _samples()
    stats = compute_block_fisher(
        model,
        list(model.blocks),
        {"a": lambda out: out["a"], "b": lambda out: out["b"], "energy": lambda out: 0.5 * out["h3"].pow(2)},
        samples,
        progress=False,
    )
    w1, w2, w3 = (b.weight.detach().double() for b in model.blocks)
    a, b = model.head_a.weight.detach().double(), model.head_b.weight.detach().double()
    tokens = 2 * 5  # every sample: 2 frames x 5 tokens, each with the same gradient for the linear heads
    g3_a = a.T @ torch.ones(2, dtype=torch.float64)
    g2_a, g1_a = w3.T @ g3_a, w2.T @ (w3.T @ g3_a)
    g2_b = b.T @ torch.ones(3, dtype=torch.float64)
    g1_b = w2.T @ g2_b
    expected = torch.zeros(3, 3, C, dtype=torch.float64)
    expected[0] = torch.stack([g1_a, g2_a, g3_a]).pow(2) * tokens
    expected[1] = torch.stack([g1_b, g2_b, torch.zeros(C, dtype=torch.float64)]).pow(2) * tokens
    # energy = 0.5 * sum(h3^2): gradient at h3 is h3 itself, per token, squared then summed.
    for x in samples:
        h3 = model(x)["h3"].detach().double().reshape(-1, C)
        expected[2, 2] += h3.pow(2).sum(0) / len(samples)
        expected[2, 1] += (h3 @ w3).pow(2).sum(0) / len(samples)
        expected[2, 0] += (h3 @ w3 @ w2).pow(2).sum(0) / len(samples)
    assert stats.raw.shape == (3, 3, C)
    assert stats.task_names == ["a", "b", "energy"]
    assert stats.block_names == ["blocks.0", "blocks.1", "blocks.2"]
    assert stats.num_samples == 3
    torch.testing.assert_close(stats.raw.double(), expected, rtol=1e-5, atol=1e-8)
    # Weights stayed frozen only during the pass and received no gradients.
    assert all(p.requires_grad and p.grad is None for p in model.parameters())


def test_combined_weights_follow_fgq_normalisation() -> None:
    generator = torch.Generator().manual_seed(2)
    raw = torch.rand(2, 4, 8, generator=generator) * torch.tensor([1.0, 1e6]).reshape(2, 1, 1)
    raw[0, 3, :4] = 0.0  # channels the tasks ignore must be floored, not zero
    stats = FisherStats(raw, ["x", "y"], [f"b{i}" for i in range(4)], num_samples=1)
    per_task = raw / raw.mean(dim=(1, 2), keepdim=True)
    summed = per_task.sum(0)
    expected = (summed / summed.mean(dim=1, keepdim=True)).clamp_min(0.01)
    combined = stats.combined_weights()
    torch.testing.assert_close(combined, expected)
    assert combined.shape == (4, 8)
    assert float(combined.min()) >= 0.01
    # The 1e6-scaled task does not drown the other: both contribute equally after per-task normalisation.
    assert torch.allclose(per_task[0].mean(), per_task[1].mean())
    importance = stats.block_importance()
    assert importance.shape == (4,)
    torch.testing.assert_close(importance.mean(), torch.tensor(1.0))


def test_save_load_round_trip_and_metadata(tmp_path) -> None:
    raw = torch.rand(2, 3, 4)
    meta = {"preset": "toy", "input_shape": [2, 5, 6], "samples": 3, "tasks": ["a", "b"]}
    stats = FisherStats(raw, ["a", "b"], ["p", "q", "r"], num_samples=3, metadata=meta)
    path = tmp_path / "sub" / "fisher.pt"
    stats.save(str(path))
    loaded = FisherStats.load(str(path))
    assert torch.equal(loaded.raw, raw)
    assert loaded.task_names == ["a", "b"] and loaded.block_names == ["p", "q", "r"]
    assert loaded.metadata == json.loads(json.dumps(meta))
    assert [p.name for p in path.parent.iterdir()] == ["fisher.pt"]  # no temporary file left behind
    with pytest.raises(ValueError, match="JSON"):
        FisherStats(raw, ["a", "b"], ["p", "q", "r"], 1, metadata={"bad": object()}).save(str(path))
    torch.save({"other": 1}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a Fisher"):
        FisherStats.load(str(tmp_path / "other.pt"))


def test_heatmap_png(tmp_path) -> None:
    stats = FisherStats(
        torch.rand(3, 5, 16) + 0.1, ["pose", "depth", "points"], [f"b{i}" for i in range(5)], 2
    )
    path = tmp_path / "heat.png"
    plot_fisher_heatmap(stats, str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_inputs_are_rejected() -> None:
    model = LinearChain()
    with pytest.raises(ValueError, match="task_losses is empty"):
        compute_block_fisher(model, list(model.blocks), {}, _samples(), progress=False)
    with pytest.raises(ValueError, match="no submodule"):
        compute_block_fisher(model, ["nope"], {"a": lambda o: o["a"]}, _samples(), progress=False)
    with pytest.raises(ValueError, match="samples is empty"):
        compute_block_fisher(model, list(model.blocks), {"a": lambda o: o["a"]}, [], progress=False)
    with pytest.raises(ValueError, match="does not match"):
        FisherStats(torch.rand(2, 3, 4), ["a"], ["p", "q", "r"], 1)


class _AttentionBlock(nn.Module):
    """Pre-norm attention + MLP with a call counter, so a test can see recomputation happen."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, 2, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.calls = 0

    def forward(self, x: torch.Tensor, *, scale: float = 1.0) -> torch.Tensor:
        self.calls += 1
        h = self.norm(x)
        x = x + scale * self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(x)


class _ToyEncoder(nn.Module):
    def __init__(self, dim: int = 8, depth: int = 3) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.blocks = nn.ModuleList([_AttentionBlock(dim) for _ in range(depth)])
        self.head = nn.Linear(dim, 2)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        for block in self.blocks:
            x = block(x, scale=0.5)  # a keyword argument must survive the checkpoint wrapper
        out = self.head(x)
        return {"a": out[..., 0].tanh(), "b": out[..., 1].pow(2)}


def test_recomputing_blocks_in_backward_gives_the_same_statistics() -> None:
    model = _ToyEncoder().eval()
    tasks = {"a": lambda out: out["a"], "b": lambda out: out["b"]}
    samples = [torch.randn(2, 5, 8, generator=torch.Generator().manual_seed(i)) for i in range(2)]

    kept = compute_block_fisher(
        model, list(model.blocks), tasks, samples, progress=False, recompute_blocks=False
    )
    assert [b.calls for b in model.blocks] == [2, 2, 2]  # one forward per sample
    recomputed = compute_block_fisher(model, list(model.blocks), tasks, samples, progress=False)
    # Block 0's output is the graph's leaf (nothing before it needs grad), so only blocks 1 and 2 are
    # recomputed: once per task's backward, per sample.
    assert [b.calls for b in model.blocks] == [4, 2 + 2 * 3, 2 + 2 * 3]
    torch.testing.assert_close(recomputed.raw, kept.raw, rtol=1e-5, atol=1e-12)
    assert kept.raw[:, 1:].abs().sum() > 0
    assert all("forward" not in block.__dict__ for block in model.blocks)  # the wrapper is gone
