"""XNNPACK partitions formed in linear memory.

XNNPACK's stock partitioner (ExecuTorch's GroupBasedPartitioner) first records, for every node, the
set of all nodes upstream and downstream of it: memory quadratic in the graph's size (gigabytes for a
1-billion-parameter ViT, and past 24 GiB once PT2E's quantize/dequantize pairs triple the node count).
`lean_xnnpack_partitioner()` keeps XNNPACK's op configs and constraints (what may be delegated, which
nodes travel together) and forms partitions from runs of a topological order instead.
"""

from __future__ import annotations


def _units(graph, groups: list[list], live: list[int]) -> dict:
    """call_function node -> its unit: its group's index (members travel together), else the node."""
    import operator

    unit: dict = {}
    for g in live:
        for node in groups[g]:
            if node.op == "call_function":
                unit[node] = g
    for node in list(unit):  # tuple outputs: their getitems go where the producer goes
        if node.users and all(u.op == "call_function" and u.target is operator.getitem for u in node.users):
            for user in node.users:
                unit.setdefault(user, unit[node])
    for node in graph.nodes:
        if node.op == "call_function":
            unit.setdefault(node, node)
    return unit


def _is_convex(group: list, index: dict) -> bool:
    """No path leaves the group and comes back (searched only below the group's last node)."""
    members = {n for n in group if n.op == "call_function"}
    if not members:
        return True
    last = max(index[n] for n in members)
    stack = [u for n in members for u in n.users if u not in members and index.get(u, last) < last]
    seen = set(stack)
    while stack:
        node = stack.pop()
        for user in node.users:
            if user in members:
                return False
            if user not in seen and index.get(user, last) < last:
                seen.add(user)
                stack.append(user)
    return True


def _class_sticky_units(graph, unit: dict, supported_units: set) -> tuple[list, set]:
    """Kahn's algorithm over units (groups contracted to one vertex), staying with one class (supported
    or not) while any unit of it is ready, starting with the unsupported ones, so supported units form
    as few contiguous runs as possible. Returns the order and the units it could not order (a cycle
    made by contracting two groups that reach into each other)."""
    from collections import deque

    members: dict = {}
    for node, u in unit.items():
        members.setdefault(u, []).append(node)
    preds: dict = {u: set() for u in members}
    for node, u in unit.items():
        for source in node.all_input_nodes:
            if source.op == "call_function" and unit[source] != u:
                preds[u].add(unit[source])
    succs: dict = {u: [] for u in members}
    for u, ps in preds.items():
        for p in ps:
            succs[p].append(u)
    pending = {u: len(ps) for u, ps in preds.items()}
    ready: dict[bool, deque] = {True: deque(), False: deque()}
    for u in members:  # graph order among the initially ready
        if pending[u] == 0:
            ready[u in supported_units].append(u)
    order, mode = [], False
    while ready[True] or ready[False]:
        if not ready[mode]:
            mode = not mode
        u = ready[mode].popleft()
        order.append(u)
        for v in succs[u]:
            pending[v] -= 1
            if pending[v] == 0:
                ready[v in supported_units].append(v)
    stuck = {u for u, count in pending.items() if count > 0}
    return [(u, members[u]) for u in order], stuck


def contiguous_partitions(graph, groups: list[list]) -> list[set]:
    """Partitions of the call_function nodes in `groups` (node lists that must stay together), each a
    maximal run of supported units in a class-sticky topological order of the graph with every group
    contracted to one unit.

    A run of consecutive units in a topological order cannot form a cycle with the rest of the graph
    (every path between two of its units passes only through units ordered between them, which are in
    the run), so no reachability sets are needed. A group that is not convex itself (a path leaves it
    and comes back) cannot be delegated and is left outside, as are groups whose contraction closes a
    cycle. Placeholders and get_attr nodes (constants) have no inputs; they join their group's partition.
    """
    index = {node: i for i, node in enumerate(graph.nodes)}
    live = [g for g in range(len(groups)) if _is_convex(groups[g], index)]
    while True:
        unit = _units(graph, groups, live)
        order, stuck = _class_sticky_units(graph, unit, set(live))
        if not stuck:
            break
        live = [g for g in live if g not in stuck]
    partitions: list[set] = []
    previous_supported = False
    for u, nodes in order:
        now_supported = isinstance(u, int)  # a group's index; other units are single nodes
        if now_supported and not previous_supported:
            partitions.append(set())
        if now_supported:
            partitions[-1].update(nodes)
            partitions[-1].update(n for n in groups[u] if n.op != "call_function")  # constants follow
        previous_supported = now_supported
    return partitions


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
