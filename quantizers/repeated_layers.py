"""Layers called more than once (a head run per frame group, a trunk iterated) under PT2E static ranges: one
input range and one output range per layer, over all its calls.

A layer whose calls are each annotated (our ``ConvQuantizer`` annotates every convolution it accepts) would
get ranges of its own per call from ``prepare_pt2e``. That does not survive ExecuTorch's XNNPACK weight
cache, which keys packed weights (the int32 bias folds in the input scale and zero point) by the weight's and
bias's names: every call would run on the first call's packing. So after ``prepare_pt2e`` the calls' input
observers become one observer module, and so do their output observers: calibration sees every call through
it, and ``convert_pt2e`` gives them all the same scales, so their packed weights are the same bytes. The graph
keeps one q/dq pair per call; nothing else changes.
"""

from __future__ import annotations

from torch.fx import GraphModule, Node

from .float_layers import repeated_layer_calls


def _observer(node: object) -> Node | None:
    return node if isinstance(node, Node) and node.op == "call_module" else None


def share_observers_across_calls(prepared: GraphModule) -> int:
    """After ``prepare_pt2e``: per repeated layer whose every call is quantized (weight observed), one observer
    module for all its calls' inputs and one for all their outputs (where every call has one). Returns the
    number of observer modules merged away."""
    merged = 0
    for calls in repeated_layer_calls(prepared):
        if not all(_observer(c.args[1]) for c in calls):
            continue  # a layer kept float: its neighbours' ranges stay their own
        inputs = [_observer(c.args[0]) for c in calls]
        outputs = [next((u for u in c.users if _observer(u)), None) for c in calls]
        for observed in (inputs, outputs):
            if None in observed:
                continue
            target = observed[0].target
            for node in observed[1:]:
                old, node.target = node.target, target
                in_use = any(n.op == "call_module" and n.target == old for n in prepared.graph.nodes)
                if old != target and not in_use:
                    prepared.delete_submodule(old)
                    merged += 1
    prepared.recompile()
    return merged


__all__ = ["share_observers_across_calls"]
