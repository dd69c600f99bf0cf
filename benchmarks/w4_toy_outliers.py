"""W4 on a toy transformer with outlier channels: plain RTN vs Fisher clipping vs Hadamard rotation vs both.

Run: OMP_NUM_THREADS=1 python benchmarks/w4_toy_outliers.py [--group-size 32] [--act-bits 8] [--torchao]
     [--keep-mean] [--seeds 0 1 2]

Every variant quantizes the same block linears (qkv, proj, fc1, fc2; embed and heads stay float) with the
same bits and group size, so sizes match except the mixed-precision row. Task error is the relative squared
error of each head's output against the float model on held-out samples, averaged over the two tasks.
"""

from __future__ import annotations

import argparse
import copy
from dataclasses import dataclass

import torch
from toy_outliers import (
    ToyTransformer,
    make_outlier_transformer,
    toy_rotation_spec,
    toy_samples,
    toy_tasks,
)

import _common  # noqa: F401 - puts tests/ (the toy models) on the path
from vggt_et.quantizers.clipping import apply_fisher_clipping, block_linears, capture_block_inputs
from vggt_et.quantizers.fisher import compute_block_fisher
from vggt_et.quantizers.mixed_precision import plan_mixed_precision
from vggt_et.quantizers.rotation import fold_residual_rotation
from vggt_et.quantizers.w4_transforms import (
    fake_quantize_linears,
    weight_storage_bytes,
    wrap_activation_fake_quant,
)

VARIANTS = ("plain RTN", "+Fisher clip", "+rotation", "+both", "+both +mixed 0.9")


@dataclass
class VariantResult:
    name: str
    task_error: float
    size_bytes: int
    int8_layers: int = 0


def plan_bytes(model: torch.nn.Module, plan: dict[str, int], group_size: int | None) -> int:
    """Packed bytes of the quantized linears under a plan (int8 per channel, int4 per group)."""
    total = 0
    for name, bits in plan.items():
        out_features, in_features = model.get_submodule(name).weight.shape
        total += weight_storage_bytes(out_features, in_features, bits, group_size if bits == 4 else None)
    return total


def task_error(model: torch.nn.Module, reference: list[dict[str, torch.Tensor]], samples: list) -> float:
    """Mean over tasks of ||y_q - y||^2 / ||y||^2, pooled over the samples."""
    with torch.no_grad():
        outputs = [model(x) for x in samples]
    errors = []
    for task in reference[0]:
        num = sum(float((o[task] - r[task]).pow(2).sum()) for o, r in zip(outputs, reference, strict=True))
        den = sum(float(r[task].pow(2).sum()) for r in reference)
        errors.append(num / den)
    return sum(errors) / len(errors)


def quantize_variant(
    base: ToyTransformer,
    name: str,
    calibration: list,
    *,
    group_size: int | None,
    act_bits: int | None = None,
    w4_budget: float = 0.9,
    torchao: bool = False,
    keep_mean: bool = False,
) -> tuple[ToyTransformer, dict[str, int]]:
    """A fake-quantized copy of ``base`` for one variant, and its bit plan {linear: bits}."""
    if name not in VARIANTS:
        raise ValueError(f"unknown variant {name!r}; choose from {VARIANTS}")
    model = copy.deepcopy(base)
    rotate = name in ("+rotation", "+both", "+both +mixed 0.9")
    fisher = name in ("+Fisher clip", "+both", "+both +mixed 0.9")
    if rotate:
        spec = toy_rotation_spec(model)
        spec.fold_centring = not keep_mean
        fold_residual_rotation(model, spec)
    blocks = list(model.blocks)
    names = [n for i, b in enumerate(blocks) for n in block_linears(b, f"blocks.{i}")]
    plan = dict.fromkeys(names, 4)
    if fisher:
        stats = compute_block_fisher(model, blocks, toy_tasks(), calibration, progress=False)
        weights = stats.combined_weights()
        calls = capture_block_inputs(model, blocks, calibration)
        if name.endswith("mixed 0.9"):
            # Plan on unclipped weights, then clip only the int4 layers (a pre-clamp would bind int8 too).
            report = plan_mixed_precision(
                model,
                blocks,
                calls,
                weights,
                w4_budget=w4_budget,
                block_importance=stats.block_importance(),
                group_size=group_size,
            )
            plan = report.plan
        int4_layers = {
            f"blocks.{i}": [n for n in block_linears(b, f"blocks.{i}") if plan[n] == 4]
            for i, b in enumerate(blocks)
        }
        apply_fisher_clipping(model, blocks, calls, weights, linears=int4_layers, group_size=group_size)
    if torchao:
        torchao_8da4w(model, plan, group_size)
        return model, plan
    fake_quantize_linears(model, plan, group_size)
    if act_bits is not None:
        wrap_activation_fake_quant(model, names, act_bits)
    return model, plan


def torchao_8da4w(model: torch.nn.Module, plan: dict[str, int], group_size: int | None) -> None:
    """Export-path numerics in eager: torchao Intx weights, dynamic int8 per-token activations."""
    from torchao.quantization import Int8DynamicActivationIntxWeightConfig, quantize_
    from torchao.quantization.granularity import PerAxis, PerGroup

    for bits in (4, 8):
        chosen = {name for name, b in plan.items() if b == bits}
        granularity = PerGroup(group_size) if group_size and bits == 4 else PerAxis(0)
        config = Int8DynamicActivationIntxWeightConfig(
            weight_dtype=getattr(torch, f"int{bits}"), weight_granularity=granularity
        )
        quantize_(model, config, filter_fn=lambda _module, fqn, chosen=chosen: fqn in chosen)


def run(
    *,
    seed: int = 0,
    group_size: int | None = 32,
    act_bits: int | None = None,
    calib: int = 4,
    evaluate: int = 4,
    variants: tuple[str, ...] = VARIANTS,
    torchao: bool = False,
    keep_mean: bool = False,
) -> list[VariantResult]:
    """One seed: build the outlier model, quantize each variant, measure task error on held-out samples."""
    base = make_outlier_transformer(seed=seed)
    calibration = toy_samples(calib, seed=100 + seed)
    held_out = toy_samples(evaluate, seed=200 + seed)
    with torch.no_grad():
        reference = [base(x) for x in held_out]
    results = []
    for name in variants:
        model, plan = quantize_variant(
            base,
            name,
            calibration,
            group_size=group_size,
            act_bits=act_bits,
            torchao=torchao,
            keep_mean=keep_mean,
        )
        size = plan_bytes(base, plan, group_size)
        eights = sum(bits == 8 for bits in plan.values())
        results.append(VariantResult(name, task_error(model, reference, held_out), size, eights))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--group-size", type=int, default=32, help="int4 group size; 0 = per output channel")
    parser.add_argument(
        "--act-bits", type=int, default=None, help="also fake-quantize linear inputs per token"
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--torchao",
        action="store_true",
        help="quantize with torchao 8da4w/8da8w (eager) instead of fake-quant",
    )
    parser.add_argument(
        "--keep-mean",
        action="store_true",
        help="rotation with fold_centring=False (RotatedLayerNorm), as VGGT needs",
    )
    args = parser.parse_args()
    group_size = args.group_size or None
    per_seed = [
        run(
            seed=s,
            group_size=group_size,
            act_bits=args.act_bits,
            torchao=args.torchao,
            keep_mean=args.keep_mean,
        )
        for s in args.seeds
    ]
    mode = f"fake-quant W4 g{group_size or 'channel'}" + (
        f" A{args.act_bits} per token" if args.act_bits else " weight-only"
    )
    if args.torchao:
        mode = f"torchao 8da4w g{group_size or 'channel'} (dynamic int8 per-token activations), eager"
    if args.keep_mean:
        mode += "; rotation keeps the mean (RotatedLayerNorm)"
    print(f"toy transformer, 4 outlier channels x50, Student-t(3) weights; {mode}; seeds {args.seeds}")
    print(
        f"{'variant':20s} {'task error (mean)':>18s} {'vs plain':>9s} {'size (B)':>10s} {'int8 layers':>12s}"
    )
    plain = sum(r[0].task_error for r in per_seed) / len(per_seed)
    for index, name in enumerate(VARIANTS):
        error = sum(r[index].task_error for r in per_seed) / len(per_seed)
        first = per_seed[0][index]
        print(
            f"{name:20s} {error:18.3e} {error / plain:9.3f} {first.size_bytes:10d} {first.int8_layers:9d}/16"
        )


if __name__ == "__main__":
    main()
