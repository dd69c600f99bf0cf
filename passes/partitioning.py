"""XNNPACK partitions formed in linear memory.

XNNPACK's stock partitioner (ExecuTorch's GroupBasedPartitioner) first records, for every node, the
set of all nodes upstream and downstream of it: memory quadratic in the graph's size (gigabytes for a
1-billion-parameter ViT, and past 24 GiB once PT2E's quantize/dequantize pairs triple the node count).
`lean_xnnpack_partitioner()` keeps XNNPACK's op configs and constraints (what may be delegated, which
nodes travel together) and forms partitions from runs of a topological order instead.
"""

from __future__ import annotations


def _class_sticky_order(graph, supported: set) -> list:
    """A topological order of the graph's call_function nodes (Kahn's algorithm) that stays with one
    class (supported or not) while any node of it is ready, starting with the unsupported ones, so
    that supported nodes form as few contiguous runs as possible."""
    from collections import deque

    pending = {}
    ready: dict[bool, deque] = {True: deque(), False: deque()}
    for node in graph.nodes:
        if node.op != "call_function":
            continue
        pending[node] = sum(1 for n in node.all_input_nodes if n.op == "call_function")
        if pending[node] == 0:
            ready[node in supported].append(node)
    order = []
    mode = False
    while ready[True] or ready[False]:
        if not ready[mode]:
            mode = not mode
        node = ready[mode].popleft()
        order.append(node)
        for user in node.users:
            if user in pending:
                pending[user] -= 1
                if pending[user] == 0:
                    ready[user in supported].append(user)
    return order


def contiguous_partitions(graph, groups: list[list]) -> list[set]:
    """Partitions of the call_function nodes in `groups` (node lists that must stay together), each a
    maximal run of supported nodes in a class-sticky topological order.

    A run of consecutive nodes in a topological order cannot form a cycle with the rest of the graph
    (every path between two of its nodes passes only through nodes ordered between them, which are in
    the run), so no reachability sets are needed. Placeholders and get_attr nodes (constants) have no
    inputs; they join their group's partition. A group split across runs by an unsupported node is
    dropped (left outside) and the runs recomputed.
    """
    import operator

    live = list(range(len(groups)))
    while True:
        group_of = {node: g for g in live for node in groups[g]}
        supported = set(group_of)
        for node in list(supported):  # tuple outputs: their getitems go where the producer goes
            if (
                node.op == "call_function"
                and node.users
                and all(u.op == "call_function" and u.target is operator.getitem for u in node.users)
            ):
                supported.update(node.users)
        run_of: dict = {}
        run, previous_supported = -1, False
        for node in _class_sticky_order(graph, supported):
            now_supported = node in supported
            if now_supported and not previous_supported:
                run += 1
            if now_supported:
                run_of[node] = run
            previous_supported = now_supported
        split = [g for g in live if len({run_of[n] for n in groups[g] if n.op == "call_function"}) > 1]
        if not split:
            break
        live = [g for g in live if g not in set(split)]
    partitions: dict[int, set] = {}
    for node, r in run_of.items():
        partitions.setdefault(r, set()).add(node)
    for g in live:  # constants follow their group
        runs = {run_of[n] for n in groups[g] if n.op == "call_function"}
        for node in groups[g]:
            if node.op != "call_function" and runs:
                partitions[next(iter(runs))].add(node)
    return [partitions[r] for r in sorted(partitions)]


def lean_xnnpack_partitioner(**kwargs):
    """XNNPACK's partitioner (same op configs and constraints) with linear-memory partition forming."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from torch.fx.passes.infra.partitioner import Partition

    class LeanXnnpackPartitioner(XnnpackPartitioner):
        def generate_partitions(self, ep):
            if self.per_op_mode:
                return super().generate_partitions(ep)
            groups = self.get_matched_nodes_from_configs(ep)
            found = contiguous_partitions(ep.graph_module.graph, groups)
            return [Partition(id=i, nodes=nodes) for i, nodes in enumerate(found)]

    return LeanXnnpackPartitioner(**kwargs)
