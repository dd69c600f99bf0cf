"""Which layers of an exported graph stay in float: name patterns over module paths, and the layer inventory.

Quantizers see FX nodes, users think in module names (``patch_embed.proj``, ``heads.*.out``). Every node
of an exported program carries ``nn_module_stack`` (module path → type, outermost first), so a node is
"inside" a module when any path on its stack matches a pattern. A pattern matches a path itself or any of
its ancestors' paths, so ``head`` keeps every op under ``head.*`` in float.

Pattern syntax: a glob (``fnmatch``, e.g. ``blocks.*.fc2``) or a regular expression prefixed with ``re:``
(``re:blocks\\.(0|1)\\.qkv``, matched with ``re.fullmatch``).
"""

from __future__ import annotations

import collections
import fnmatch
import re
from collections.abc import Callable, Iterable, Sequence

import torch
from torch.fx import GraphModule, Node

#: ATen ops that own a weight: the layers we report as quantized or kept in float.
WEIGHTED_OPS = {
    torch.ops.aten.linear.default: "linear",
    torch.ops.aten.conv1d.default: "conv",
    torch.ops.aten.conv2d.default: "conv",
    torch.ops.aten.conv3d.default: "conv",
    torch.ops.aten.convolution.default: "conv",
    torch.ops.aten.conv_transpose2d.input: "conv",
}

REGEX_PREFIX = "re:"


class InvalidLayerPatternError(ValueError):
    """A keep-float pattern that cannot be compiled."""


def compile_patterns(patterns: Sequence[str] | str) -> Callable[[str], bool]:
    """A predicate ``path -> bool``: true when any pattern matches the path or one of its ancestors."""
    if isinstance(patterns, str):
        patterns = [patterns]
    matchers: list[Callable[[str], bool]] = []
    for pattern in patterns:
        if not isinstance(pattern, str) or not pattern.strip():
            raise InvalidLayerPatternError(
                f"keep-float pattern {pattern!r} is empty or not a string; give a module path glob such as "
                "'blocks.*.fc2' or a regex such as 're:head(\\..*)?'"
            )
        if pattern.startswith(REGEX_PREFIX):
            try:
                regex = re.compile(pattern[len(REGEX_PREFIX) :])
            except re.error as error:
                raise InvalidLayerPatternError(
                    f"keep-float pattern {pattern!r} is not a valid regular expression ({error}); fix it or "
                    "drop the 're:' prefix to use a glob"
                ) from None
            matchers.append(lambda path, regex=regex: regex.fullmatch(path) is not None)
        else:
            matchers.append(lambda path, glob=pattern: fnmatch.fnmatchcase(path, glob))

    def matches(path: str) -> bool:
        return any(match(prefix) for prefix in _path_and_ancestors(path) for match in matchers)

    return matches


def unmatched_patterns(patterns: Sequence[str], paths: Iterable[str]) -> list[str]:
    """The patterns that match none of `paths` (a typo in a keep-float list would otherwise pass silently)."""
    paths = list(paths)
    return [p for p in patterns if not any(map(compile_patterns(p), paths))]


def near_paths(pattern: str, paths: Sequence[str], count: int = 3) -> list[str]:
    """Layer paths that look like `pattern` (for "did you mean" hints), closest first."""
    import difflib

    text = pattern.removeprefix(REGEX_PREFIX)
    return difflib.get_close_matches(text, list(paths), n=count, cutoff=0.4)


def _path_and_ancestors(path: str) -> list[str]:
    parts = path.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def _clean_path(path: str) -> str:
    """Dynamo-style stacks spell paths as ``L['self'].blocks.0``; torch.export spells ``blocks.0``."""
    path = re.sub(r"^L\['self'\]\.?", "", path)
    return re.sub(r"getattr\((.*?), '(\w+)'\)", r"\1.\2", path)


def module_paths(node: Node) -> list[str]:
    """Module paths on the node's ``nn_module_stack``, outermost first (empty for the root or no metadata)."""
    stack = node.meta.get("nn_module_stack") or {}
    paths = []
    for value in stack.values():
        path = value[0] if isinstance(value, tuple) else value
        path = _clean_path(str(path))
        if path:
            paths.append(path)
    return paths


def weight_owner_path(node: Node) -> str | None:
    """The module path of a weighted op's weight, from its ``get_attr`` target (``blocks.0.fc1.weight``)."""
    if node.target not in WEIGHTED_OPS or len(node.args) < 2:
        return None
    weight = node.args[1]
    # Walk back through q/dq or observer nodes to the parameter itself.
    for _ in range(4):
        if not isinstance(weight, Node):
            return None
        if weight.op == "get_attr":
            return str(weight.target).rpartition(".")[0]
        if weight.op == "call_module" or (weight.op == "call_function" and weight.args):
            weight = weight.args[0]
        else:
            return None
    return None


def layer_path(node: Node) -> str:
    """The best module path for a node: innermost ``nn_module_stack`` entry, else its weight's owner."""
    paths = module_paths(node)
    if paths:
        return paths[-1]
    return weight_owner_path(node) or node.name


def node_is_kept_float(node: Node, matches: Callable[[str], bool]) -> bool:
    """True when the node sits in (or its weight belongs to) a module matched by the keep-float patterns."""
    candidates = module_paths(node)
    owner = weight_owner_path(node)
    if owner:
        candidates.append(owner)
    return any(matches(path) for path in candidates)


def weighted_layers(graph_module: GraphModule) -> list[Node]:
    """The linear and convolution nodes, in graph order."""
    return [n for n in graph_module.graph.nodes if n.op == "call_function" and n.target in WEIGHTED_OPS]


def repeated_layer_calls(graph_module: GraphModule) -> list[list[Node]]:
    """Linear/conv nodes grouped by the weight they read, for weights read by more than one of them: one
    layer called several times (a head run over frame groups, a trunk iterated); groups and calls in graph
    order."""
    groups: dict[str, list[Node]] = collections.defaultdict(list)
    for node in weighted_layers(graph_module):
        name = _weight_name(node)
        if name is not None:
            groups[name].append(node)
    return [calls for calls in groups.values() if len(calls) > 1]


def _weight_name(node: Node) -> str | None:
    """The parameter a linear/conv reads as its weight, directly or through PT2E observers."""
    weight = node.args[1] if len(node.args) > 1 else None
    while isinstance(weight, Node) and weight.op == "call_module" and weight.args:
        weight = weight.args[0]  # an observer prepare_pt2e put on the weight
    ok = isinstance(weight, Node) and weight.op in ("get_attr", "placeholder")
    return str(weight.target) if ok else None


def unique_in_order(items: Iterable[str]) -> list[str]:
    seen: dict[str, None] = {}
    for item in items:
        seen.setdefault(item, None)
    return list(seen)
