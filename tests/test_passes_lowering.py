"""Backend pass lists end to end: the toy ViT lowers to XNNPACK as ONE delegate; QNN: rank <= 4, no SDPA."""

from __future__ import annotations

import json

import pytest
import torch
from toy_transformers import export_toy, image_input, toy_vit

import vggt_et.passes as P
from vggt_et.passes.graph_utils import copy_program


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach(), b.detach()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


def test_xnnpack_list_gives_one_delegate_with_everything_inside():
    depth = 2
    model = toy_vit(head=True, depth=depth, use_einops="mixed")
    args = image_input()
    ep = export_toy(model, args)
    report = P.audit_program(ep, "xnnpack", progress=False)
    after = report["after"]
    assert after["delegate_segments"] == 1, P.format_audit(report)
    assert after["non_delegated"] == {}, P.format_audit(report)
    assert after["delegated_fraction"] == 1.0
    assert after["sdpa_remaining"] == 0 and after["max_rank"] <= 4
    # The contract keys, and it serialises.
    assert set(report) >= {"backend", "input_shape", "passes", "before", "after"}
    assert report["input_shape"] == [2, 3, 16, 16]
    assert all(set(p) >= {"name", "changed"} for p in report["passes"])
    assert report["before"]["ops"]["aten.layer_norm.default"] == 4 * depth + 1
    json.dumps(report)
    text = P.format_audit(report)
    assert "delegate segments: 1" in text and "aten.layer_norm.default" in text


def test_xnnpack_lowered_program_runs_and_matches_eager():
    from executorch.extension.pybindings.portable_lib import _load_for_executorch_from_buffer

    model = toy_vit(head=True, depth=1)
    args = image_input()
    ep = P.apply(export_toy(model, args), "xnnpack")
    pte = P.lower_xnnpack(ep).to_executorch().buffer  # keep alive: the loaded program points into it
    program = _load_for_executorch_from_buffer(pte)
    out = program.forward(list(args))[0]
    assert rel_err(out, model(*args)) <= 1e-5


def test_without_the_passes_xnnpack_splits():
    """The baseline the passes beat: only the mandatory folding gives several delegates, LayerNorm outside."""
    model = toy_vit(depth=1)
    ep = export_toy(model, image_input())
    folded = P.fold_constants(copy_program(ep))[0]
    cov = P.coverage(P.lower_xnnpack(folded).exported_program())
    assert cov["delegate_segments"] > 1
    assert "aten.native_layer_norm.default" in cov["non_delegated"]


@pytest.mark.parametrize("backend", ["xnnpack", "qnn", "portable", "tflite"])
def test_pass_lists_keep_outputs_and_are_idempotent(backend):
    model = toy_vit(head=True, depth=2, use_einops="mixed")
    args = image_input()
    ep = export_toy(model, args)
    out, reports = P.apply_with_report(ep, backend)
    assert [r.name for r in reports] == P.pass_names(backend)
    assert rel_err(out.module()(*args), model(*args)) <= 1e-5
    # Quantization re-exports the program: the rewritten graph and its new constants must survive that.
    reexported = torch.export.export(out.module(), args, strict=False)
    assert rel_err(reexported.module()(*args), model(*args)) <= 1e-5
    again = P.apply_with_report(out, backend)[1]
    assert not any(r.changed for r in again), [r.name for r in again if r.changed]
    # The original program is untouched (passes work on a copy).
    assert P.count_ops(ep.graph)["aten.scaled_dot_product_attention.default"] == 2


def test_qnn_list_no_sdpa_and_rank_at_most_4():
    model = toy_vit(head=True, depth=2, use_einops=True)
    ep = export_toy(model, image_input())
    assert P.max_compute_rank(ep.graph) == 5
    report = P.audit_program(ep, "qnn", progress=False)
    after = report["after"]
    assert after["sdpa_remaining"] == 0
    assert after["max_rank"] <= 4
    assert after["delegate_segments"] is None and after["delegated_fraction"] is None
    assert "aten.bmm.default" in after["ops"]


def test_unknown_backend_and_broken_pass_are_named(monkeypatch):
    ep = export_toy(toy_vit(depth=1), image_input())
    with pytest.raises(ValueError, match="unknown backend 'coreml'"):
        P.apply(ep, "coreml")

    def breaks(program):
        out = next(n for n in program.graph.nodes if n.op == "output")
        program.graph.erase_node(out)  # no output: the program no longer verifies
        return program, 1

    monkeypatch.setitem(P.PASSES, "breaks", breaks)
    with pytest.raises(P.PassError, match="breaks"):
        P.run_passes(ep, ["fold_constants", "breaks"])


def test_fp16_program_folds_and_has_no_fp32_scalars():
    """fp16 exports: bicubic-aa has no CPU half kernel (folding computes it in fp32), and scalar operands
    become fp16 constants so to_edge adds no fp32→fp16 casts (which XNNPACK leaves outside)."""
    model = toy_vit(head=True, depth=1)
    args = image_input()
    ref = model(*args).detach()
    half_args = tuple(a.half() for a in args)
    ep = export_toy(model.half(), half_args)
    out, reports = P.apply_with_report(ep, "xnnpack")
    assert torch.ops.aten._upsample_bicubic2d_aa.vec not in {n.target for n in out.graph.nodes}
    binary = (torch.ops.aten.add.Tensor, torch.ops.aten.mul.Tensor, torch.ops.aten.sub.Tensor)
    scalars = [
        a
        for n in out.graph.nodes
        if n.op == "call_function" and n.target in binary
        for a in n.args
        if isinstance(a, (int, float))
    ]
    assert scalars == []
    assert all(t.dtype == torch.float16 for t in out.constants.values())
    assert rel_err(out.module()(*half_args).float(), ref) <= 1e-2  # fp16 arithmetic
    assert not any(r.changed for r in P.apply_with_report(out, "xnnpack")[1])


def test_pass_lists_are_ordered_by_stated_constraints():
    """ORDER is checked on import; a list that breaks it is refused, naming the passes."""
    for backend in P.BACKENDS:
        P.check_order(P.PIPELINES[backend])
    fold, rotate = (
        P.PIPELINES["xnnpack"][0],
        next(p for p in P.PIPELINES["xnnpack"] if p.name == "rotate_half"),
    )
    with pytest.raises(ValueError, match="rotate_half"):
        P.check_order([rotate, fold])
    assert P.pass_names("xnnpack") == [p.name for p in P.PIPELINES["xnnpack"]]
