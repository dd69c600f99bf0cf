"""Linear-memory XNNPACK partitioning (passes/partitioning.py) on toy graphs and a toy ViT."""

from __future__ import annotations

import random

import torch
import torch.fx as fx
from torch.fx.passes.utils.fuser_utils import validate_partition
from toy_transformers import export_toy, image_input, toy_vit

import vggt_et.passes as P
from vggt_et.passes.graph_utils import copy_program


def _graph(fn) -> tuple[fx.Graph, dict[str, fx.Node]]:
    gm = fx.symbolic_trace(fn)
    return gm.graph, {n.name: n for n in gm.graph.nodes}


def _groups(nodes: dict[str, fx.Node], *names: str) -> list[list[fx.Node]]:
    return [[nodes[n]] for n in names]


def test_independent_unsupported_node_does_not_split_a_chain() -> None:
    def fn(x):
        a = x + 1
        b = torch.cumsum(x, 0)  # unsupported, independent of the chain a -> c -> d
        c = a * 2
        return b + c

    graph, nodes = _graph(fn)
    names = [n.name for n in graph.nodes if n.op == "call_function"]
    assert names == ["add", "cumsum", "mul", "add_1"]  # graph order interleaves: 2 runs there
    parts = P.contiguous_partitions(graph, _groups(nodes, "add", "mul", "add_1"))
    assert [sorted(n.name for n in p) for p in parts] == [["add", "add_1", "mul"]]
    assert validate_partition(list(parts[0]))


def test_unsupported_node_on_a_path_splits_the_partition() -> None:
    def fn(x):
        a = x + 1
        b = torch.cumsum(a, 0)
        return b * 2 + a

    graph, nodes = _graph(fn)
    parts = P.contiguous_partitions(graph, _groups(nodes, "add", "mul", "add_1"))
    assert [sorted(n.name for n in p) for p in parts] == [["add"], ["add_1", "mul"]]
    assert all(validate_partition(list(p)) for p in parts)


def test_group_that_cannot_stay_together_is_left_outside() -> None:
    def fn(x):
        a = x + 1
        b = torch.cumsum(a, 0)
        return b * 2

    graph, nodes = _graph(fn)
    assert P.contiguous_partitions(graph, [[nodes["add"], nodes["mul"]]]) == []
    # A group that a path leaves and re-enters is never delegated as one piece, whatever the path holds.
    parts = P.contiguous_partitions(graph, [[nodes["add"], nodes["mul"]], [nodes["cumsum"]]])
    assert [sorted(n.name for n in p) for p in parts] == [["cumsum"]]


def test_a_group_is_never_split_by_the_order() -> None:
    """p -> q directly, but q also waits for r, which waits for an unsupported u: a node-by-node order
    would emit p before u and q after it; the contracted group {p, q} stays whole."""

    def fn(x):
        p = x + 1
        u = torch.cumsum(x, 0)
        r = u * 3
        return p * r

    graph, nodes = _graph(fn)
    parts = P.contiguous_partitions(graph, [[nodes["add"], nodes["mul_1"]], [nodes["mul"]]])
    assert [sorted(n.name for n in p) for p in parts] == [["add", "mul", "mul_1"]]
    assert validate_partition(list(parts[0]))


def test_random_graphs_give_convex_partitions_covering_the_supported_nodes() -> None:
    rng = random.Random(0)
    for trial in range(30):
        graph = fx.Graph()
        values = [graph.placeholder("x")]
        ops = []
        for _ in range(40):
            args = rng.sample(values, k=min(len(values), rng.choice([1, 2])))
            node = graph.call_function(torch.add if len(args) == 2 else torch.neg, tuple(args))
            values.append(node)
            ops.append(node)
        graph.output(values[-1])
        supported = [n for n in ops if rng.random() < 0.7]
        groups, taken = [], set()
        for node in supported:  # some groups of two: a node with one of its supported inputs
            if node in taken:
                continue
            partner = next((n for n in node.all_input_nodes if n in supported and n not in taken), None)
            pair = [node, partner] if partner is not None and rng.random() < 0.5 else [node]
            groups.append(pair)
            taken.update(pair)
        parts = P.contiguous_partitions(graph, groups)
        where = {n: i for i, p in enumerate(parts) for n in p}
        for group in groups:  # whole or not at all
            assert len({where.get(n, -1) for n in group}) == 1, trial
        assert len(where) >= len(supported) // 2, trial
        assert all(validate_partition(list(p)) for p in parts), trial


def _lowered_coverage(ep, partitioner):
    from executorch.exir import to_edge_transform_and_lower

    edge = to_edge_transform_and_lower(copy_program(ep), partitioner=[partitioner])
    return edge, P.coverage(edge.exported_program())


def test_lean_partitioner_delegates_what_the_stock_one_does_and_runs() -> None:
    """Unrewritten toy ViT (LayerNorm etc. stay outside): same delegated ops, no more segments."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.extension.pybindings.portable_lib import _load_for_executorch_from_buffer

    model = toy_vit(depth=2)
    args = image_input()
    ep = P.fold_constants(copy_program(export_toy(model, args)))[0]
    _, stock = _lowered_coverage(ep, XnnpackPartitioner())
    edge, lean = _lowered_coverage(ep, P.lean_xnnpack_partitioner())
    assert stock["delegate_segments"] > 1
    assert lean["non_delegated"] == stock["non_delegated"]
    assert lean["delegated_fraction"] == stock["delegated_fraction"]
    assert lean["delegate_segments"] <= stock["delegate_segments"]
    buffer = edge.to_executorch().buffer
    out = _load_for_executorch_from_buffer(buffer).forward(list(args))[0]
    expected = model(*args).detach()
    assert float((out - expected).abs().max() / expected.abs().max()) <= 1e-5


def test_lean_partitioner_gives_the_stock_bytes_when_everything_is_supported() -> None:
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner

    ep = P.apply(export_toy(toy_vit(depth=2, head=True), image_input()), "xnnpack")
    stock, _ = _lowered_coverage(ep, XnnpackPartitioner())
    lean, coverage = _lowered_coverage(ep, P.lean_xnnpack_partitioner())
    assert coverage["delegate_segments"] == 1
    assert lean.to_executorch().buffer == stock.to_executorch().buffer
