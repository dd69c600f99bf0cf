"""Property tests of the backend pass lists on a generated family of transformers (tests/transformer_family.py).

Every member, after the XNNPACK list: no SDPA or norm op left; the same function as the original program
(rel. L2 <= 1e-5, fp32); a second run of the list changes nothing; lowered, one XNNPACK segment with no
compute op outside; run by the ExecuTorch runtime, outputs equal to eager. The QNN and TFLite lists keep
what they promise: no SDPA, same function, rank <= 4. With a tiny budget, bound_attention splits every
member's attention (SDPA or written out by hand) within it, exactly. 30 members in the fast tier, 60 more
under -m slow.
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import traceback
from concurrent.futures import ProcessPoolExecutor

import pytest
import torch
from transformer_family import CHOICES, Member, family

import vggt_et.passes as P

# The fast tier stacks one encoder block (lowering time grows with the op count); depth 2 runs under -m slow.
FAST_CHOICES = {**CHOICES, "depth": (1,)}
FAST = family(30, seed=0, choices=FAST_CHOICES)
SLOW = family(60, seed=1)

# Members allowed to lower to more than one segment or leave compute outside, each with the reason the audit
# gives. Empty: every member lowers whole.
EXCEPTIONS: dict[str, str] = {}

_GONE = ("scaled_dot_product", "layer_norm", "rms_norm")


def rel_l2(got: torch.Tensor, ref: torch.Tensor) -> float:
    got, ref = got.detach().float(), ref.detach().float()
    return float((got - ref).norm() / ref.norm().clamp_min(1e-12))


@functools.cache
def _exported(member: Member):
    """(program, inputs, eager output) of a member, exported once per process (the QNN/TFLite and slow checks)."""
    model, args = member.build()
    with torch.no_grad():
        ref = model(*args)
        ep = torch.export.export(model, args, strict=False)
    return ep, args, ref


def check_xnnpack(member: Member) -> None:
    from executorch.runtime import Runtime

    ep, args, ref = _exported(member)
    out = P.apply(ep, "xnnpack")
    left = {k: v for k, v in P.count_ops(out.graph).items() if any(g in k for g in _GONE)}
    assert left == {}, f"{member.name}: {left}"
    assert rel_l2(out.module()(*args), ref) <= 1e-5, member.name
    again = [r.name for r in P.apply_with_report(out, "xnnpack")[1] if r.changed]
    assert again == [], f"{member.name}: a second run changed {again}"
    lowered = P.lower_xnnpack(out)
    cov = P.coverage(lowered.exported_program())
    if member.name not in EXCEPTIONS:
        assert (cov["delegate_segments"], cov["non_delegated"]) == (1, {}), f"{member.name}: {cov}"
    pte = lowered.to_executorch().buffer  # the buffer and the program stay referenced: the method reads them
    program = Runtime.get().load_program(pte)
    (got,) = program.load_method("forward").execute(list(args))
    assert rel_l2(got, ref) <= 1e-5, member.name


def check_qnn_tflite(member: Member) -> None:
    ep, args, ref = _exported(member)
    for backend in ("qnn", "tflite"):
        out = P.apply(ep, backend)
        sdpa = [k for k in P.count_ops(out.graph) if "scaled_dot_product" in k]
        assert sdpa == [], f"{backend} {member.name}"
        assert P.max_compute_rank(out.graph) <= 4, f"{backend} {member.name}"
        assert rel_l2(out.module()(*args), ref) <= 1e-5, f"{backend} {member.name}"


# Small enough that every member's attention is split into blocks of rows (a score row is <= 9 tokens).
BOUNDED_BUDGET = 128


def check_bounded(member: Member) -> None:
    """With a tiny attention budget, the XNNPACK and QNN lists split every attention, SDPA or written out by
    hand, into blocks within the budget, and the program computes the same function."""
    ep, args, ref = _exported(member)
    assert P.attention_intermediates(P.apply(ep, "xnnpack")), f"{member.name}: no attention found"
    for backend in ("xnnpack", "qnn"):
        out = P.apply_with_report(
            ep, backend, configured={"bound_attention": lambda e: P.bound_attention(e, BOUNDED_BUDGET)}
        )[0]
        worst = max(size for _, size in P.attention_intermediates(out))
        assert worst <= BOUNDED_BUDGET, f"{backend} {member.name}: {worst} bytes of scores"
        assert rel_l2(out.module()(*args), ref) <= 1e-5, f"{backend} {member.name}"


def _failure(member: Member) -> str | None:
    """`check_xnnpack` in a worker process: None, or the failure as text (tracebacks do not cross processes)."""
    torch.set_num_threads(1)
    try:
        check_xnnpack(member)
    except Exception:  # noqa: BLE001 - reported by the member's own test
        return traceback.format_exc()
    return None


@pytest.fixture(scope="module")
def xnnpack_failures() -> dict[int, str | None]:
    """`check_xnnpack` of every fast member, on two processes: lowering is single-threaded Python (most of the
    cost), and the fast tier's machines have two cores."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(2, os.cpu_count() or 1), mp_context=context) as pool:
        return dict(zip((m.seed for m in FAST), pool.map(_failure, FAST), strict=True))


@pytest.mark.parametrize("member", FAST, ids=lambda m: f"m{m.seed}")
def test_xnnpack_list_on_family(member, xnnpack_failures):
    failure = xnnpack_failures[member.seed]
    assert failure is None, failure


@pytest.mark.slow
@pytest.mark.parametrize("member", SLOW, ids=lambda m: f"m{m.seed}")
def test_xnnpack_list_on_family_slow(member, one_thread):
    check_xnnpack(member)


@pytest.mark.parametrize("member", FAST, ids=lambda m: f"m{m.seed}")
def test_qnn_and_tflite_lists_on_family(member, one_thread):
    check_qnn_tflite(member)


@pytest.mark.slow
@pytest.mark.parametrize("member", SLOW, ids=lambda m: f"m{m.seed}")
def test_qnn_and_tflite_lists_on_family_slow(member, one_thread):
    check_qnn_tflite(member)


@pytest.mark.parametrize("member", FAST, ids=lambda m: f"m{m.seed}")
def test_bounded_attention_on_family(member, one_thread):
    check_bounded(member)


def test_family_is_seeded_and_covers_every_feature():
    assert family(30, seed=0, choices=FAST_CHOICES) == FAST and family(30, seed=1) != FAST
    for feature, values in FAST_CHOICES.items():
        assert {getattr(m, feature) for m in FAST} == set(values), feature
    assert len({m.name.split(":", 1)[1] for m in FAST}) == len(FAST)  # no two members alike
    assert {m.depth for m in SLOW} == set(CHOICES["depth"])
