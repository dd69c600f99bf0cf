"""Each pass on toy transformers: its pattern is gone, outputs are unchanged, a second run changes nothing."""

from __future__ import annotations

import einops
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from toy_transformers import SdpaVariants, export_toy, image_input, sdpa_inputs, toy_vit

import vggt_et.passes as P
from vggt_et.passes.graph_utils import copy_program

aten = torch.ops.aten


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach(), b.detach()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


def targets(ep) -> set:
    return {n.target for n in ep.graph.nodes if n.op == "call_function"}


def run(pass_fn, ep):
    """Apply to a copy (the original stays usable as the reference) and check the pass is idempotent."""
    out, n = pass_fn(copy_program(ep))
    again, n2 = pass_fn(copy_program(out))
    assert n2 == 0, f"second run of {pass_fn} rewrote {n2} more nodes"
    assert P.count_ops(again.graph) == P.count_ops(out.graph)
    return out, n


@pytest.fixture(scope="module")
def vit_case():
    model = toy_vit(head=True, depth=1)
    args = image_input()
    ep = export_toy(model, args)
    with torch.no_grad():
        ref = model(*args)
    return model, args, ep, ref


@pytest.fixture(scope="module")
def vit_folded(vit_case):
    _, args, ep, ref = vit_case
    return P.fold_constants(copy_program(ep))[0], args, ref


def test_fold_constants_removes_runtime_tables(vit_case):
    _, args, ep, ref = vit_case
    before = targets(ep)
    runtime_tables = {aten._upsample_bicubic2d_aa.vec, aten.embedding.default, aten.arange.default}
    assert runtime_tables | {aten.sin.default} <= before
    out, n = run(P.fold_constants, ep)
    assert n > 0
    left = targets(out)
    for op in (
        aten._upsample_bicubic2d_aa.vec,
        aten.embedding.default,
        aten.arange.default,
        aten.arange.start_step,
        aten.sin.default,
        aten.cos.default,
        aten.pow.Scalar,
        aten.linspace.default,
        aten.to.dtype,
        aten._assert_tensor_metadata.default,
    ):
        assert op not in left, op
    assert not any(
        n.meta["val"].dtype == torch.float64
        for n in out.graph.nodes
        if isinstance(n.meta.get("val"), torch.Tensor)
    )
    assert rel_err(out.module()(*args), ref) <= 1e-5
    # New constants are proper lifted constants: the program re-exports (quantization does this).
    again = torch.export.export(out.module(), args, strict=False)
    assert rel_err(again.module()(*args), ref) <= 1e-5
    # Parameters read only by folded subgraphs are gone from the program.
    assert "pos_embed" not in out.state_dict


def test_fold_constants_keeps_shared_weight_relayouts():
    class Shared(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(8, 8)

        def forward(self, x):
            return self.lin(x) + x @ self.lin.weight.t()  # t() of a weight the linear also reads

    torch.manual_seed(0)
    model, x = Shared().eval(), torch.randn(3, 8)
    ep = export_toy(model, (x,))
    out, n = P.fold_constants(copy_program(ep))
    assert n == 0
    assert not out.constants  # no second copy of the weight
    assert targets(out) & {aten.t.default, aten.transpose.int, aten.permute.default}


@pytest.mark.parametrize("use_einops", [True, False])
def test_select_to_slice_removes_select_and_rank5(use_einops):
    model = toy_vit(depth=1, rope=False, qk_norm=False, use_einops=use_einops)
    args = image_input()
    ep = export_toy(model, args)
    assert P.max_compute_rank(ep.graph) == 5
    assert targets(ep) & {aten.select.int, aten.unbind.int}
    out, n = run(P.select_to_slice, ep)
    assert n > 0
    assert not targets(out) & {aten.select.int, aten.unbind.int, aten.split.Tensor, aten.chunk.default}
    assert P.max_compute_rank(out.graph) == 4
    assert rel_err(out.module()(*args), model(*args)) <= 1e-5


def test_select_to_slice_handles_chunk_split_and_plain_select():
    class Chunky(nn.Module):
        def forward(self, x):
            a, b = x.chunk(2, dim=-1)
            c, d, e = torch.split(x, [1, 2, 3], dim=1)
            return a * b + x[:, :, 2].unsqueeze(-1) + c.sum() + d.mean() + e[0, 0, 0]

    x = torch.randn(2, 6, 4)
    ep = export_toy(Chunky(), (x,))
    out, n = run(P.select_to_slice, ep)
    assert n > 0
    assert not targets(out) & {
        aten.select.int,
        aten.split.Tensor,
        aten.chunk.default,
        aten.split_with_sizes.default,
    }
    assert rel_err(out.module()(x), Chunky()(x)) <= 1e-5


def test_simplify_layout_collapses_einops_chains():
    class Chains(nn.Module):
        def forward(self, x):  # x [2, 3, 4, 5]
            y = einops.rearrange(x, "b c h w -> b (h w) c")
            y = y.unsqueeze(1).squeeze(1).view(2, 4, 5, 3).flatten(1, 2)  # back to [2, 20, 3]
            z = y.permute(0, 2, 1).permute(0, 2, 1)  # identity
            w = einops.repeat(x.mean(1), "b h w -> b c h w", c=3) * x[:, :3]
            return z, w, x.unsqueeze(0).permute(1, 0, 2, 3, 4).squeeze(1)

    x = torch.randn(2, 3, 4, 5)
    model = Chains()
    ep = export_toy(model, (x,))
    out, n = run(P.simplify_layout, ep)
    assert n > 0
    left = targets(out)
    assert not left & {
        aten.view.default,
        aten.unsqueeze.default,
        aten.squeeze.dim,
        aten.flatten.using_ints,
        aten.transpose.int,
        aten.expand.default,
    }
    nodes = [nd for nd in out.graph.nodes if nd.op == "call_function"]
    for nd in nodes:  # no chains of reshapes or of permutes, no identities
        if nd.target in (aten.reshape.default, aten.permute.default):
            src = nd.args[0]
            assert not (src.op == "call_function" and src.target == nd.target), nd
            same_shape = list(src.meta["val"].shape) == list(nd.meta["val"].shape)
            assert not (same_shape and nd.target == aten.reshape.default), nd
    ref, got = model(x), out.module()(x)
    for g, r in zip(got, ref, strict=True):
        assert rel_err(g, r) <= 1e-5


def test_simplify_layout_turns_4d_matmul_into_bmm():
    class Mm(nn.Module):
        def forward(self, a, b):
            return torch.matmul(a, b)

    a, b = torch.randn(2, 3, 4, 5), torch.randn(2, 3, 5, 6)
    ep = export_toy(Mm(), (a, b))
    out, _ = run(P.simplify_layout, ep)
    assert aten.matmul.default not in targets(out) and aten.bmm.default in targets(out)
    assert P.max_compute_rank(out.graph) == 3  # only reshapes touch the 4-D tensors
    assert rel_err(out.module()(a, b), a @ b) <= 1e-5


@pytest.mark.parametrize("mode", ["plain", "scale", "float_mask", "bool_mask", "causal"])
@pytest.mark.parametrize("split_heads", [False, True])
def test_decompose_sdpa(mode, split_heads):
    model, args = SdpaVariants(mode).eval(), sdpa_inputs()
    ep = export_toy(model, args)
    out, n = run(lambda e: P.decompose_sdpa(e, split_heads=split_heads), ep)
    assert n == 1
    left = targets(out)
    assert aten.scaled_dot_product_attention.default not in left and aten.bmm.default in left
    for nd in out.graph.nodes:
        if nd.op == "call_function" and nd.target == aten.bmm.default:
            assert nd.meta["val"].dim() == 3
    if split_heads:
        assert sum(nd.target == aten.bmm.default for nd in out.graph.nodes) == 2 * args[0].shape[1]
    assert rel_err(out.module()(*args), model(*args)) <= 1e-5


def test_decompose_sdpa_rejects_dropout_with_clear_error():
    class Drop(nn.Module):
        def forward(self, q, k, v):
            return F.scaled_dot_product_attention(q, k, v, dropout_p=0.5)

    ep = export_toy(Drop(), sdpa_inputs())
    with pytest.raises(P.PassError, match="dropout"):
        P.decompose_sdpa(copy_program(ep))


def test_decompose_layer_norm_incl_qk_norm(vit_folded):
    ep, args, ref = vit_folded
    assert aten.layer_norm.default in targets(ep)
    out, n = run(P.decompose_layer_norm, ep)
    assert n == 5  # norm1, q_norm, k_norm, norm2, final norm
    assert aten.layer_norm.default not in targets(out)
    for nd in out.graph.nodes:  # every mean is the form XNNPACK takes
        if nd.op == "call_function" and nd.target == aten.mean.dim:
            assert nd.args[0].meta["val"].dim() == 4 and list(nd.args[1]) == [2, 3] and nd.args[2] is True
    assert rel_err(out.module()(*args), ref) <= 1e-5


@pytest.mark.parametrize("mode", ["sign", "matmul"])
def test_rotate_half(vit_folded, mode):
    ep, args, ref = vit_folded
    assert aten.neg.default in targets(ep)
    out, n = run(lambda e: P.rewrite_rotate_half(e, mode=mode), ep)
    assert n == 4  # q and k, y and x halves
    assert aten.neg.default not in targets(out)
    if mode == "sign":  # the sign went into the constant sin tables: no extra multiply
        assert P.count_ops(out.graph)["aten.mul.Tensor"] == P.count_ops(ep.graph)["aten.mul.Tensor"]
    assert rel_err(out.module()(*args), ref) <= 1e-5


def test_rotate_half_without_constant_tables(vit_case):
    _, args, ep, ref = vit_case  # unfolded: sin is computed at run time, so a sign vector is multiplied in
    out, n = run(P.rewrite_rotate_half, ep)
    assert n == 4 and aten.neg.default not in targets(out)
    assert rel_err(out.module()(*args), ref) <= 1e-5


class Normalise5d(nn.Module):
    """Image normalisation on [B, S, 3, H, W] before the frames are folded into the batch (as VGGT does)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 1, 3, 1, 1))
        self.conv = nn.Conv2d(3, 4, 2, 2)

    def forward(self, images):
        b, s, c, h, w = images.shape
        x = ((images - self.mean) / self.std).exp()
        y = self.conv(x.reshape(b * s, c, h, w))
        return 1 + y.exp()


def test_sink_reshapes_and_float_scalars():
    torch.manual_seed(0)
    model, x = Normalise5d().eval(), torch.rand(1, 2, 3, 6, 6)
    ep = export_toy(model, (x,))
    assert P.max_compute_rank(ep.graph) == 5
    out, n = run(P.sink_reshapes, ep)
    assert n == 3  # exp, div, sub: the reshape moved to the input
    assert P.max_compute_rank(out.graph) == 4
    assert rel_err(out.module()(x), model(x)) <= 1e-5
    # The reshaped per-channel constants stay small ([1, 3, 1, 1]), not image-sized.
    assert all(t.numel() == 3 for t in out.constants.values())

    adds = [nd for nd in ep.graph.nodes if nd.op == "call_function" and nd.target == aten.add.Tensor]
    assert any(isinstance(a, int) for nd in adds for a in nd.args)
    fixed, n = run(P.float_scalars, ep)
    assert n == 1
    scalars = [
        a
        for nd in fixed.graph.nodes
        if nd.op == "call_function" and nd.target == aten.add.Tensor
        for a in nd.args
        if not isinstance(a, torch.fx.Node)
    ]
    assert scalars and all(isinstance(a, float) for a in scalars)
    assert rel_err(fixed.module()(x), model(x)) <= 1e-5


def test_signed_expm1_and_detach_removed():
    class Head(nn.Module):
        def forward(self, y):
            z = torch.sign(y) * torch.expm1(torch.abs(y))  # inverse-log activation
            return z + (z * 2).detach()

    y = torch.randn(4, 8) * 3
    y[0, 0] = 0.0
    ep = export_toy(Head(), (y,))
    out, n = run(P.signed_expm1, ep)
    assert n == 1 and not targets(out) & {aten.sign.default, aten.expm1.default}
    assert rel_err(out.module()(y), Head()(y)) <= 1e-5
    cleaned, n = run(P.simplify_layout, out)
    assert n == 1 and aten.detach.default not in targets(cleaned)
    assert rel_err(cleaned.module()(y), Head()(y)) <= 1e-5


def test_push_slices_removes_head_permutes_for_per_head_attention():
    model = toy_vit(depth=1, rope=False, qk_norm=False, use_einops=True)
    args = image_input()
    ep = export_toy(model, args)
    head = ["fold_constants", "select_to_slice", "simplify_layout", "split_head_sdpa"]
    without = P.run_passes(ep, head + ["simplify_layout"])[0]
    out, n = run(P.push_slices, P.run_passes(ep, head)[0])
    assert n > 0
    out = P.run_passes(out, ["simplify_layout"])[0]
    permutes = [P.count_ops(g.graph).get("aten.permute.default", 0) for g in (without, out)]
    assert permutes[1] < permutes[0]
    # Of the 4-D head permutes only the output's head merge [B, H, N, D] -> [B, N, H, D] is left (the others
    # are kᵀ per head for bmm, and the patch embedding's flatten-transpose).
    four_d = [
        nd
        for nd in out.graph.nodes
        if nd.op == "call_function" and nd.target == aten.permute.default and nd.meta["val"].dim() == 4
    ]
    assert len(four_d) == 1
    assert rel_err(out.module()(*args), model(*args)) <= 1e-5


def test_decompose_sdpa_leaves_grouped_query_attention_alone():
    class Gqa(nn.Module):
        def forward(self, q, k, v):
            return F.scaled_dot_product_attention(q, k, v, enable_gqa=True)

    q = torch.randn(1, 4, 5, 8)
    k, v = torch.randn(1, 2, 5, 8), torch.randn(1, 2, 5, 8)
    ep = export_toy(Gqa(), (q, k, v))
    out, n = P.decompose_sdpa(copy_program(ep))
    assert n == 0 and aten.scaled_dot_product_attention.default in targets(out)
    assert rel_err(out.module()(q, k, v), Gqa()(q, k, v)) <= 1e-5


class ZeroDimConstant(nn.Module):
    def forward(self, x):
        return x * (torch.tensor(2.0) * 3)


class FilledMask(nn.Module):
    """An attention mask built in place: `zeros(N, M); mask[:, k:] = -inf` (writes into a computed tensor)."""

    def forward(self, q, k, v):
        mask = torch.zeros(q.shape[-2], k.shape[-2])
        mask[:, 4:] = float("-inf")
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


class WriteAfterRead(nn.Module):
    """A constant read at run time both before and after an in-place write: it must not be folded whole."""

    def forward(self, x):
        buf = torch.zeros(x.shape)
        y = x + buf
        buf[:, 1:] = 5.0
        return y * buf


@pytest.mark.parametrize(
    "model, args",
    [
        (ZeroDimConstant(), (torch.randn(3, 4),)),
        (FilledMask(), sdpa_inputs()),
        (WriteAfterRead(), (torch.randn(2, 3),)),
    ],
    ids=["zero_dim", "filled_mask", "write_after_read"],
)
def test_fold_constants_handles_0d_constants_and_in_place_writes(model, args):
    ep = export_toy(model, args)
    out, n = run(P.fold_constants, ep)
    assert rel_err(out.module()(*args), model(*args)) <= 1e-5
    left = {nd.target for nd in out.graph.nodes if nd.op == "call_function"}
    if not isinstance(model, WriteAfterRead):
        assert n > 0
        # Everything constant is gone: no lifted-scalar copies, no zeros/fill_ left for run time.
        assert not left & {
            aten.lift_fresh_copy.default,
            aten.fill_.Tensor,
            aten.zeros.default,
            aten.detach_.default,
        }
    # The XNNPACK list takes it whole.
    lowered = P.apply(ep, "xnnpack")
    assert rel_err(lowered.module()(*args), model(*args)) <= 1e-5


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.int64, torch.bool])
def test_fold_constants_any_rank_and_dtype(dtype):
    class Consts(nn.Module):
        def forward(self, x):
            scalar = torch.tensor(3, dtype=dtype)
            vec = torch.ones(4, dtype=dtype)
            return x + (scalar.to(x.dtype) * 2) + vec.to(x.dtype).sum()

    x = torch.randn(2, 4)
    ep = export_toy(Consts(), (x,))
    out, n = run(P.fold_constants, ep)
    assert n > 0 and rel_err(out.module()(x), Consts()(x)) <= 1e-5


class NewForms(nn.Module):
    """The forms the XNNPACK list rewrites for the delegate: means over any dims, expands into a concat,
    tanh-GELU, SiLU, RMSNorm and a rank-6 einops permute."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.RMSNorm(8)

    def forward(self, x):  # x [2, 3, 4, 8]
        views = x.mean(1)  # [2, 4, 8]
        pooled = views.mean(1, keepdim=True)  # [2, 1, 8]
        both = torch.cat((views, pooled.expand(-1, 4, -1)), dim=-1)  # [2, 4, 16]
        act = F.gelu(both, approximate="tanh") + F.silu(both)
        six = einops.rearrange(x, "b v (h p) (w q) -> b (h w) (p q v)", p=2, q=2)  # rank 6 on the way
        return act, self.norm(x).mean((0, 2)), x.mean(), six


def test_xnnpack_only_passes_leave_delegable_forms():
    torch.manual_seed(0)
    model, x = NewForms().eval(), torch.randn(2, 3, 4, 8)
    ep = export_toy(model, (x,))
    for fn in (
        P.reduce_means,
        P.broadcast_expand,
        P.explicit_activations,
        P.decompose_rms_norm,
        P.split_permutes,
    ):
        out, n = run(fn, ep)
        assert n > 0, fn
        for g, r in zip(out.module()(x), model(x), strict=True):
            assert rel_err(g, r) <= 1e-5, fn
    out = P.apply(ep, "xnnpack")
    for nd in out.graph.nodes:
        if nd.op == "call_function" and nd.target == aten.mean.dim:
            assert nd.args[0].meta["val"].dim() == 4 and list(nd.args[1]) == [2, 3] and nd.args[2] is True
    gone = {aten.expand.default, aten.silu.default, aten.rms_norm.default, aten.gelu.default}
    assert not targets(out) & gone
    assert P.max_compute_rank(P.apply(ep, "qnn").graph) <= 4


class ConstantMaskedFill(nn.Module):
    """masked_fill with masks built from constants: a causal -inf fill and a finite fill of a window."""

    def forward(self, x):  # x [2, 6, 6]
        n = x.shape[-1]
        future = torch.ones(n, n, dtype=torch.bool).triu(1)
        far = (torch.arange(n)[:, None] - torch.arange(n)[None, :]).abs() > 2
        return x.masked_fill(future, float("-inf")).softmax(-1) + x.masked_fill(far, -3.5)


def test_constant_masked_fill_becomes_arithmetic_and_lowers_whole():
    """ExecuTorch lowers masked_fill to where + scalar_tensor, which XNNPACK does not take: the program split
    into segments around them. With its mask a constant, the fill is exact adds and multiplies."""
    model, x = ConstantMaskedFill().eval(), torch.randn(2, 6, 6)
    ep = P.fold_constants(export_toy(model, (x,)))[0]
    out, n = run(P.constant_masked_fill, ep)
    assert n == 2 and aten.masked_fill.Scalar not in targets(out)
    assert rel_err(out.module()(x), model(x)) == 0.0
    cov = P.coverage(P.lower_xnnpack(P.apply(ep, "xnnpack")).exported_program())
    assert (cov["delegate_segments"], cov["non_delegated"]) == (1, {}), cov
