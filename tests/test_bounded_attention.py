"""bound_attention: SDPA split into blocks whose scores fit a byte budget, exactly, on toy transformers."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from toy_transformers import (
    HandWrittenAttention,
    SdpaVariants,
    export_toy,
    image_input,
    sdpa_inputs,
    toy_vit,
)

import vggt_et.passes as P
from vggt_et.passes.bounded_attention import plan_blocks
from vggt_et.passes.graph_utils import copy_program

aten = torch.ops.aten


def rel_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b))


def bounded(ep, budget: int):
    """bound_attention then decompose_sdpa, as the backend lists run them; checks the split is idempotent."""
    out, n = P.bound_attention(copy_program(ep), budget)
    again, n2 = P.bound_attention(copy_program(out), budget)
    assert n2 == 0
    return P.decompose_sdpa(out)[0], n


def sdpa_count(ep) -> int:
    return sum(n.target == aten.scaled_dot_product_attention.default for n in ep.graph.nodes)


class InputMask(nn.Module):
    """A float mask computed at run time, broadcast over heads ([B, 1, N, N])."""

    def forward(self, q, k, v, mask):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


@pytest.mark.parametrize("mode", ["plain", "scale", "float_mask", "bool_mask", "causal"])
@pytest.mark.parametrize("budget", [100, 300])  # rows split (8 blocks) / batch split, heads whole (2 blocks)
def test_bounded_equals_whole_and_fits_budget(mode, budget):
    model, args = SdpaVariants(mode).eval(), sdpa_inputs()
    ep = export_toy(model, args)
    whole = P.decompose_sdpa(copy_program(ep))[0]
    assert max(b for _, b in P.attention_intermediates(whole)) > budget  # the test is not vacuous
    out, n = bounded(ep, budget)
    assert n == 1
    sizes = P.attention_intermediates(out)
    assert len(sizes) >= 4 and max(b for _, b in sizes) <= budget
    assert rel_l2(out.module()(*args), whole.module()(*args)) <= 1e-5
    assert rel_l2(out.module()(*args), model(*args)) <= 1e-5


def test_runtime_mask_is_sliced_per_block():
    args = (*sdpa_inputs(n=10), torch.randn(2, 1, 10, 10))
    ep = export_toy(InputMask(), args)
    out, n = bounded(ep, 10 * 4 * 3)  # 3 rows per block: rows and heads and batch all split
    assert n == 1 and max(b for _, b in P.attention_intermediates(out)) <= 120
    assert rel_l2(out.module()(*args), InputMask()(*args)) <= 1e-5


def test_blocks_share_their_inputs_work():
    """Per block only what differs: a q row slice, two bmm and a softmax. q is scaled once, k and v sliced and
    transposed once per batch-head entry, batch and heads flattened once (before, each of the 32 blocks
    carried its own multiply, kᵀ and reshapes: lowering time grows with the node count)."""
    b, heads, n = 2, 4, 16
    args = sdpa_inputs(b=b, heads=heads, n=n)
    ep = export_toy(SdpaVariants("scale").eval(), args)
    out, _ = bounded(ep, 4 * n * 4)  # 4 score rows per block: 4 row blocks per batch-head entry
    targets = [node.target for node in out.graph.nodes if node.op == "call_function"]
    blocks, groups = targets.count(aten._softmax.default), b * heads
    assert blocks == groups * 4
    assert targets.count(aten.mul.Tensor) == 1
    assert targets.count(aten.transpose.int) + targets.count(aten.permute.default) <= groups
    assert targets.count(aten.reshape.default) + targets.count(aten.view.default) <= 4
    assert targets.count(aten.slice.Tensor) <= blocks + 3 * groups
    assert rel_l2(out.module()(*args), SdpaVariants("scale").eval()(*args)) <= 1e-5


def _hand_written_inputs(lead=(2, 2), n: int = 10) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(*lead, n, 8, generator=g) for _ in range(3))
    return q, k, v, torch.randn(lead[0], *([1] * (len(lead) - 1)), n, n, generator=g)


@pytest.mark.parametrize(
    "mode", ["mul", "div", "q_scaled", "mask", "mask_left", "fill", "softmax_dtype", "einsum", "einsum_kt"]
)
@pytest.mark.parametrize("lead", [(2, 2), (3,)], ids=["4d", "3d"])
def test_hand_written_attention_is_bounded_like_sdpa(mode, lead):
    """Attention written out (matmul, scale, mask, softmax, matmul) over the budget is taken as the SDPA it
    computes and split like one: no score block above the budget, same result."""
    model, args = HandWrittenAttention(mode).eval(), _hand_written_inputs(lead)
    ep = export_toy(model, args)
    whole = P.decompose_sdpa(copy_program(ep))[0]
    assert max(b for _, b in P.attention_intermediates(whole)) > 120
    out, n = bounded(ep, 120)  # 3 rows of 10 scores per block
    assert n == 1 and sdpa_count(out) == 0
    assert max(b for _, b in P.attention_intermediates(out)) <= 120
    with torch.no_grad():
        assert rel_l2(out.module()(*args), model(*args)) <= 1e-5


@pytest.mark.parametrize("mode", ["probs_out", "mask_then_scale"])
def test_hand_written_attention_sdpa_cannot_express_stays_whole(mode, caplog):
    """Probabilities the program also returns must exist whole; a mask scaled with the scores is not SDPA's
    form. Both stay as written (same result), and the pass says which scores stay over the budget."""
    model, args = HandWrittenAttention(mode).eval(), _hand_written_inputs()
    ep = export_toy(model, args)
    with caplog.at_level("WARNING"):
        out, n = P.bound_attention(copy_program(ep), 120)
    assert n == 0 and "over the budget" in caplog.text
    with torch.no_grad():
        got, want = out.module()(*args), model(*args)
    for g, w in zip(
        got if mode == "probs_out" else [got], want if mode == "probs_out" else [want], strict=True
    ):
        assert rel_l2(g, w) <= 1e-6


class TorchAttention(nn.Module):
    """torch's own layers: nn.MultiheadAttention asked for its weights (bmm, or baddbmm with the mask as its
    addend, softmax, bmm; the averaged weights unused) and nn.TransformerEncoderLayer (SDPA)."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.mha = nn.MultiheadAttention(16, 2, batch_first=True)
        self.encoder = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "encoder":
            return self.encoder(x)
        n = x.shape[1]
        mask = torch.ones(n, n, dtype=torch.bool).triu(1) if self.kind == "mha_causal" else None
        return self.mha(x, x, x, attn_mask=mask, need_weights=True)[0]


@pytest.mark.parametrize("kind", ["mha", "mha_causal", "encoder"])
def test_torch_attention_layers_bounded_through_xnnpack_list_lower_whole(kind):
    torch.manual_seed(0)
    model, args = TorchAttention(kind).eval(), (torch.randn(2, 12, 16),)
    ep = export_toy(model, args)
    out, reports = P.apply_with_report(
        ep, "xnnpack", configured={"bound_attention": lambda e: P.bound_attention(e, 200)}
    )
    assert {r.name: r.matches for r in reports}["bound_attention"] == 1
    assert max(b for _, b in P.attention_intermediates(out)) <= 200
    with torch.no_grad():
        assert rel_l2(out.module()(*args), model(*args)) <= 1e-5
    cov = P.coverage(P.lower_xnnpack(out).exported_program())
    assert (cov["delegate_segments"], cov["non_delegated"]) == (1, {}), cov


def test_budget_none_and_large_budget_leave_attention_whole():
    ep = export_toy(SdpaVariants("plain").eval(), sdpa_inputs())
    assert P.bound_attention(copy_program(ep), None)[1] == 0
    assert P.bound_attention(copy_program(ep), 10**6)[1] == 0
    assert sdpa_count(P.bound_attention(copy_program(ep), 100)[0]) == 8


def test_plan_blocks_even_and_within_budget():
    plan = plan_blocks([2, 16], 1000, 1000, 4, 64 * 1000 * 4 * 5)  # 320 rows a block
    assert [len(r) for r in plan.ranges] == [2, 16, 4]
    assert plan.ranges[-1] == ((0, 250), (250, 500), (500, 750), (750, 1000))
    plan = plan_blocks([2, 16], 100, 100, 4, 100 * 100 * 4 * 8)  # 8 heads a block
    assert [len(r) for r in plan.ranges] == [2, 2, 1]


@pytest.mark.parametrize(
    "text,expected",
    [("64MiB", 64 * 2**20), ("512KiB", 512 * 2**10), ("1GB", 10**9), ("4096", 4096), ("none", None)],
)
def test_parse_budget(text, expected):
    assert P.parse_budget(text) == expected


@pytest.mark.parametrize("text", ["64 apples", "-1MiB", "0", ""])
def test_parse_budget_rejects(text):
    with pytest.raises(ValueError, match="budget"):
        P.parse_budget(text)


def test_toy_vit_bounded_through_xnnpack_pass_list_is_one_segment():
    model = toy_vit(head=True, depth=2)
    args = image_input()
    ep = export_toy(model, args)
    budget = 2048
    whole, _ = P.apply_with_report(ep, "xnnpack", configured={"bound_attention": lambda e: (e, 0)})
    out, reports = P.apply_with_report(
        ep, "xnnpack", configured={"bound_attention": lambda e: P.bound_attention(e, budget)}
    )
    assert {r.name: r.matches for r in reports}["bound_attention"] == 2
    assert max(b for _, b in P.attention_intermediates(whole)) > budget
    assert max(b for _, b in P.attention_intermediates(out)) <= budget
    with torch.no_grad():
        assert rel_l2(out.module()(*args), whole.module()(*args)) <= 1e-5
    lowered = P.lower_xnnpack(out).exported_program()
    cov = P.coverage(lowered)
    assert cov["delegate_segments"] == 1 and cov["delegated_fraction"] == 1.0


def test_qnn_pass_list_chunks_rows_of_its_per_head_attention():
    model = toy_vit(head=True, depth=1)
    args = image_input()
    ep = export_toy(model, args)
    budget = 1024
    out, reports = P.apply_with_report(
        ep, "qnn", configured={"bound_attention": lambda e: P.bound_attention(e, budget)}
    )
    assert {r.name: r.matches for r in reports}["bound_attention"] == 1
    sizes = P.attention_intermediates(out)
    assert sizes and max(b for _, b in sizes) <= budget
    assert P.max_compute_rank(out.graph) <= 4
    with torch.no_grad():
        assert rel_l2(out.module()(*args), model(*args)) <= 1e-5
