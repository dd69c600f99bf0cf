"""Shared plumbing for ExportedProgram passes: copying, emitting nodes with metadata, lifted constants.

Passes edit `ep.graph` directly (cheaper than re-tracing a billion-parameter model), so every node they
create needs `meta["val"]` (a fake tensor) for later passes and for `to_edge`; `emit` computes it by running
the op on the fake inputs. Constants are registered the way `torch.export` lifts them (CONSTANT_TENSOR
inputs placed before the user inputs), so the program still verifies, runs through `ep.module()` and
re-exports, which quantization relies on.
"""

from __future__ import annotations

import copy
import math
import weakref
from collections.abc import Iterable
from typing import Any

import torch
from torch._guards import detect_fake_mode
from torch.export import ExportedProgram
from torch.export.exported_program import InputKind, InputSpec, TensorArgument
from torch.export.graph_signature import ExportGraphSignature
from torch.fx import Graph, Node

aten = torch.ops.aten

# Metadata worth carrying from a replaced node to its replacement (provenance for reports and quantizers).
_COPIED_META = ("stack_trace", "nn_module_stack", "source_fn_stack", "torch_fn", "from_node", "custom")


class PassError(RuntimeError):
    """A pass produced a program that does not verify, or was given a graph it cannot handle."""


def copy_program(ep: ExportedProgram) -> ExportedProgram:
    """A copy whose graph and tensor dictionaries can be edited; the weights themselves are shared."""
    gm = copy.deepcopy(ep.graph_module)
    sig = ExportGraphSignature(list(ep.graph_signature.input_specs), list(ep.graph_signature.output_specs))
    return _rebuild(ep, gm, sig, dict(ep.state_dict), dict(ep.constants))


def _rebuild(
    ep: ExportedProgram,
    gm: torch.fx.GraphModule,
    sig: ExportGraphSignature,
    state_dict: dict[str, Any],
    constants: dict[str, Any],
) -> ExportedProgram:
    return ExportedProgram(
        root=gm,
        graph=gm.graph,
        graph_signature=sig,
        state_dict=state_dict,
        range_constraints=ep.range_constraints,
        module_call_graph=copy.deepcopy(ep.module_call_graph),
        example_inputs=ep.example_inputs,
        constants=constants,
        verifiers=list(ep.verifiers),
    )


def finalize(ep: ExportedProgram) -> ExportedProgram:
    """Drop dead nodes and unused constants, lint and recompile, and return a freshly verified program."""
    gm = ep.graph_module
    gm.graph.eliminate_dead_code()
    remove_unused_constants(ep)
    gm.graph.lint()  # no recompile here: the new program's GraphModule generates its code anyway
    sig = ExportGraphSignature(list(ep.graph_signature.input_specs), _output_specs(ep))
    return _rebuild(ep, gm, sig, ep.state_dict, ep.constants)


def done(ep: ExportedProgram, changes: int) -> tuple[ExportedProgram, int]:
    """A pass's return value: the finalized program when it changed anything, else `ep` as it was (a pass that
    matched nothing costs no rebuild, and the manager skips its check)."""
    return (finalize(ep) if changes else ep), changes


def _output_specs(ep: ExportedProgram) -> list:
    """Output specs renamed after the nodes the output now returns (a pass may have replaced them)."""
    returned = list(ep.graph.output_node().args[0])
    specs = list(ep.graph_signature.output_specs)
    if len(returned) != len(specs):
        raise PassError(f"graph returns {len(returned)} values but the signature lists {len(specs)} outputs")
    out = []
    for spec, node in zip(specs, returned, strict=True):
        if isinstance(node, Node) and isinstance(spec.arg, TensorArgument) and spec.arg.name != node.name:
            spec = copy.copy(spec)
            spec.arg = TensorArgument(name=node.name)
        out.append(spec)
    return out


_FAKE_MODES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def fake_mode_of(graph: Graph):
    """The graph's FakeTensorMode (cached: `emit` asks once per new node, and big graphs have many inputs)."""
    mode = _FAKE_MODES.get(graph)
    if mode is not None:
        return mode
    for n in graph.nodes:
        if n.op == "placeholder" and isinstance(n.meta.get("val"), torch.Tensor):
            mode = detect_fake_mode([n.meta["val"]])
            if mode is not None:
                break
    if mode is not None:
        _FAKE_MODES[graph] = mode
    if mode is None:
        raise PassError(
            "graph has no fake-tensor metadata on its inputs; pass an ExportedProgram from torch.export"
        )
    return mode


def _to_val(a: Any) -> Any:
    if isinstance(a, Node):
        return a.meta["val"]
    if isinstance(a, (list, tuple)):
        return type(a)(_to_val(x) for x in a)
    return a


def emit(
    graph: Graph, target: Any, args: tuple, kwargs: dict | None = None, like: Node | None = None
) -> Node:
    """Insert `target(*args)` at the graph's current insertion point, with meta["val"] and provenance."""
    kwargs = kwargs or {}
    node = graph.call_function(target, args, kwargs)
    with fake_mode_of(graph):
        node.meta["val"] = target(*_to_val(args), **_to_val(kwargs))
    if like is not None:
        for key in _COPIED_META:
            if key in like.meta:
                node.meta[key] = like.meta[key]
    return node


class EmitOnce:
    """`emit`, but an op on the same arguments is emitted once and reused (a pass's own common-subexpression
    elimination): the blocks of a bounded attention share their k, v slices, and need one kᵀ per slice, not
    one per block. The first emission's insertion point must precede every later use, which holds for a pass
    that walks the graph in order and inserts before the node it rewrites."""

    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.emitted: dict[tuple, Node] = {}

    def __call__(
        self, target: Any, args: tuple, kwargs: dict | None = None, like: Node | None = None
    ) -> Node:
        key = (target, _hashable(args), _hashable(kwargs or {}))
        node = self.emitted.get(key)
        if node is None or node.graph is not self.graph:
            node = self.emitted[key] = emit(self.graph, target, args, kwargs, like=like)
        return node


def _hashable(value: Any) -> Any:
    """Arguments as a hashable key: nodes by identity, containers recursively."""
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, *(_hashable(v) for v in value))
    if isinstance(value, dict):
        return tuple(sorted((k, _hashable(v)) for k, v in value.items()))
    return value


def static_shape(node: Node) -> list[int] | None:
    """The node's shape as ints, or None when any dimension is symbolic (dynamic shapes are left alone)."""
    v = node.meta.get("val")
    if not isinstance(v, torch.Tensor):
        return None
    if not all(isinstance(s, int) for s in v.shape):  # SymInt: int() would specialise the dim
        return None
    return list(v.shape)


def prod(xs: Iterable[int]) -> int:
    return math.prod(xs)


def const_kind_of(ep: ExportedProgram) -> dict[str, InputSpec]:
    """Placeholder name -> input spec, for placeholders that hold weights/constants (never mutated)."""
    mutated = set(ep.graph_signature.buffers_to_mutate.values())
    out = {}
    for spec in ep.graph_signature.input_specs:
        if spec.kind in (InputKind.PARAMETER, InputKind.CONSTANT_TENSOR) or (
            spec.kind == InputKind.BUFFER and spec.target not in mutated
        ):
            out[spec.arg.name] = spec
    return out


def constant_value(ep: ExportedProgram, spec: InputSpec) -> torch.Tensor:
    if spec.kind == InputKind.CONSTANT_TENSOR or (spec.kind == InputKind.BUFFER and not spec.persistent):
        return ep.constants[spec.target]
    return ep.state_dict[spec.target]


def filled_constant(where: torch.Tensor, value: float, dtype: torch.dtype) -> torch.Tensor:
    """`value` where the bool tensor `where` is set, 0 elsewhere: a constant mask as a tensor to add."""
    return torch.zeros(where.shape, dtype=dtype).masked_fill(where, value)


def add_constant(ep: ExportedProgram, tensor: torch.Tensor, base_name: str = "_folded_const") -> Node:
    """Register `tensor` as a lifted constant input (placed before the user inputs) and return its node.

    An equal lifted constant already in the program is reused, so repeated patterns (the same RoPE table in
    every block) are stored once.
    """
    graph = ep.graph
    # Folded values can be views with zero strides (an expand, or size-1 dims of a reshape): ExecuTorch
    # serialises only dense row-major tensors, so store a fresh compact copy.
    tensor = tensor.detach().clone(memory_format=torch.contiguous_format)
    for spec in ep.graph_signature.input_specs:
        if spec.kind != InputKind.CONSTANT_TENSOR:
            continue
        old = ep.constants.get(spec.target)
        if (
            isinstance(old, torch.Tensor)
            and old.shape == tensor.shape
            and old.dtype == tensor.dtype
            and torch.equal(old, tensor)
        ):
            return next(n for n in graph.nodes if n.op == "placeholder" and n.name == spec.arg.name)
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    specs = ep.graph_signature.input_specs
    first_user = next((i for i, s in enumerate(specs) if s.kind == InputKind.USER_INPUT), len(specs))
    # Names of erased nodes stay reserved in the graph's namespace: ask it, not just the live nodes.
    taken = {n.name for n in graph.nodes} | set(ep.constants) | set(ep.state_dict)
    i = 0
    while f"{base_name}_{i}" in taken or f"{base_name}_{i}" in graph._graph_namespace._used_names:
        i += 1
    name = f"{base_name}_{i}"
    anchor = placeholders[first_user] if first_user < len(placeholders) else None
    if anchor is not None:
        with graph.inserting_before(anchor):
            node = graph.placeholder(name)
    else:
        last = placeholders[-1] if placeholders else None
        ctx = graph.inserting_after(last) if last is not None else graph.inserting_before(None)
        with ctx:
            node = graph.placeholder(name)
    if node.name != name:
        raise PassError(f"could not name the new constant {name} (got {node.name})")
    node.target = name
    with fake_mode_of(graph):
        node.meta["val"] = torch.empty_strided(tensor.shape, tensor.stride(), dtype=tensor.dtype)
    ep.constants[name] = tensor
    specs.insert(first_user, InputSpec(InputKind.CONSTANT_TENSOR, TensorArgument(name=name), name, None))
    return node


def remove_unused_constants(ep: ExportedProgram) -> int:
    """Delete weight/constant placeholders nothing reads any more, with their tensors. Returns how many."""
    consts = const_kind_of(ep)
    removed = 0
    for node in list(ep.graph.nodes):
        if node.op != "placeholder" or node.users or node.name not in consts:
            continue
        spec = consts[node.name]
        still_named = [s for s in ep.graph_signature.input_specs if s.target == spec.target and s is not spec]
        if not still_named:
            ep.state_dict.pop(spec.target, None)
            ep.constants.pop(spec.target, None)
        ep.graph_signature.input_specs.remove(spec)
        ep.graph.erase_node(node)
        removed += 1
    return removed


def permutation(node: Node, rank: int) -> list[int]:
    """The dim order a permute or transpose node applies, as a full permutation of `rank` dims."""
    if node.target == torch.ops.aten.permute.default:
        return [int(p) % rank for p in node.args[1]]
    a, b = int(node.args[1]) % rank, int(node.args[2]) % rank
    perm = list(range(rank))
    perm[a], perm[b] = perm[b], perm[a]
    return perm
