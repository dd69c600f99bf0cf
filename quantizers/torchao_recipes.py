"""8da4w for XNNPACK: torchao ``Int8DynamicActivationIntxWeightConfig`` on the linears of an exported graph.

torchao's ``quantize_`` swaps ``nn.Linear`` weights for a tensor subclass whose ``F.linear`` traces to the
choose_qparams → quantize → dequantize pattern XNNPACK fuses into dynamically quantized linears. An
``ExportedProgram.module()`` has no ``nn.Linear`` left, only ``aten.linear`` nodes reading parameters, and we
must keep the graph the passes produced. So each weight goes through ``quantize_`` on a throw-away
``nn.Linear`` holding it, the quantized weight replaces the parameter, and the node's target becomes
``F.linear`` (the subclass handles it at ``__torch_function__`` level; ``aten.linear`` would decompose into
``aten.t`` first, which the subclass does not implement). Re-exporting then gives what ExecuTorch's own llama
export gets from quantizing the eager module. Activations are quantized per token at run time: no
calibration.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.fx import GraphModule, Node
from tqdm import tqdm

from .float_layers import layer_path, unique_in_order, weighted_layers


class InvalidGroupSizeError(ValueError):
    """A weight group size or bit width torchao cannot use."""


@dataclass
class TorchaoOutcome:
    module: GraphModule
    quantized_layers: list[str]
    float_layers: list[str]
    notes: list[str] = field(default_factory=list)


# XNNPACK takes a 4-bit per-channel weight as one block of all its inputs, and 4-bit blocks must be multiples
# of 32 inputs (ExecuTorch 1.5.1 refuses others while lowering): such a layer stays float.
XNNPACK_INT4_BLOCK = 32


def intx_config(group_size: int, weight_bits: int = 4):
    """The torchao config: symmetric int-``weight_bits`` weights per group (``group_size=0``: per channel)."""
    from torchao.quantization import Int8DynamicActivationIntxWeightConfig
    from torchao.quantization.granularity import PerAxis, PerGroup

    if not isinstance(group_size, int) or group_size < 0:
        raise InvalidGroupSizeError(
            f"group_size must be a non-negative integer (0 = per output channel), got {group_size!r}"
        )
    if weight_bits not in range(1, 9):
        raise InvalidGroupSizeError(f"weight_bits must be 1..8, got {weight_bits!r}")
    return Int8DynamicActivationIntxWeightConfig(
        weight_dtype=getattr(torch, f"int{weight_bits}"),
        weight_granularity=PerAxis(0) if group_size == 0 else PerGroup(group_size),
    )


def _parameter_owner(module: nn.Module, target: str) -> tuple[nn.Module, str]:
    owner_path, _, attr = target.rpartition(".")
    return (module.get_submodule(owner_path) if owner_path else module), attr


def _checked_bits_by_layer(
    bits_by_layer: Mapping[str, int] | None, linears: list[Node], group_size: int
) -> dict[str, int]:
    """Validate a per-layer plan before any weight changes: known linears, bit widths torchao takes."""
    plan = dict(bits_by_layer or {})
    known = {layer_path(n) for n in linears}
    known |= {str(n.args[1].target).rpartition(".")[0] for n in linears if isinstance(n.args[1], Node)}
    unknown = sorted(set(plan) - known)
    if unknown:
        shown = ", ".join(unknown[:3]) + (f" and {len(unknown) - 3} more" if len(unknown) > 3 else "")
        raise ValueError(f"bits_by_layer names layers that are not linears of this program: {shown}")
    for bits in set(plan.values()):
        intx_config(0 if bits == 8 else group_size, bits)
    return plan


def quantize_linears_8da4w(
    module: GraphModule,
    *,
    group_size: int,
    weight_bits: int = 4,
    keep_float: Callable[[Node], bool] | None = None,
    progress: bool = True,
    bits_by_layer: Mapping[str, int] | None = None,
) -> TorchaoOutcome:
    """Quantize (in place) the weights of ``module``'s linear nodes; returns what was quantized and kept.

    ``bits_by_layer`` ({module path: bits}) overrides ``weight_bits`` per layer, for mixed 4/8-bit plans.
    Layers it puts at 8 bits get per-output-channel scales: groups buy nothing at 8 bits, and that is the
    arithmetic a mixed-precision plan measured.
    """
    from torchao.quantization import quantize_

    configs = {(group_size, weight_bits): intx_config(group_size, weight_bits)}
    quantized, kept, notes = [], [], []
    done: dict[str, torch.Tensor] = {}
    parameters = dict(module.named_parameters())
    linears = [n for n in weighted_layers(module) if n.target == torch.ops.aten.linear.default]
    bits_by_layer = _checked_bits_by_layer(bits_by_layer, linears, group_size)
    matched: set[str] = set()
    for node in tqdm(linears, desc="8da4w weights", unit="linear", file=sys.stderr, disable=not progress):
        weight = node.args[1]
        path = layer_path(node)
        if keep_float is not None and keep_float(node):
            kept.append(path)
            continue
        if not (isinstance(weight, Node) and weight.op == "get_attr"):
            kept.append(path)
            notes.append(f"{path}: weight is computed in the graph, not a parameter; kept float")
            continue
        target = str(weight.target)
        if target not in done:
            tensor = parameters.get(target)
            if tensor is None or tensor.dim() != 2:
                kept.append(path)
                notes.append(f"{path}: weight {target} is not a 2-D parameter; kept float")
                continue
            bits, groups = weight_bits, group_size
            planned = [p for p in (path, target.rpartition(".")[0]) if p in bits_by_layer]
            if planned:
                matched.add(planned[0])
                bits = bits_by_layer[planned[0]]
                groups = 0 if bits == 8 else group_size
            if groups and tensor.shape[1] % groups:
                kept.append(path)
                notes.append(f"{path}: {tensor.shape[1]} inputs not divisible by group {groups}; float")
                continue
            if bits == 4 and not groups and tensor.shape[1] % XNNPACK_INT4_BLOCK:
                kept.append(path)
                notes.append(
                    f"{path}: 4-bit per channel needs inputs in multiples of {XNNPACK_INT4_BLOCK} for "
                    f"XNNPACK, it has {tensor.shape[1]}; float"
                )
                continue
            if (groups, bits) not in configs:
                configs[(groups, bits)] = intx_config(groups, bits)
            stand_in = nn.Linear(tensor.shape[1], tensor.shape[0], bias=False)
            stand_in.weight = nn.Parameter(tensor.detach(), requires_grad=False)
            quantize_(stand_in, configs[(groups, bits)])
            owner, attr = _parameter_owner(module, target)
            setattr(owner, attr, stand_in.weight)
            done[target] = stand_in.weight
        node.target = F.linear
        quantized.append(path)
    module.recompile()
    if bits_by_layer:
        counts = {
            b: sum(1 for p in matched if bits_by_layer[p] == b) for b in sorted(set(bits_by_layer.values()))
        }
        notes.append("per-layer bits: " + ", ".join(f"{n} layers at {b} bit" for b, n in counts.items()))
    quantized = unique_in_order(quantized)
    kept += [layer_path(n) for n in weighted_layers(module) if n.target != torch.ops.aten.linear.default]
    return TorchaoOutcome(module, quantized, [p for p in unique_in_order(kept) if p not in quantized], notes)
