"""Named pass lists per backend, applied with a verification after every pass.

`apply(ep, backend)` is what the pipeline calls; `apply_with_report` also says what each pass did, which the
audit prints. A pass that breaks the program fails here, naming the pass, rather than later in `to_edge`.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial

from torch.export import ExportedProgram

from .fold_constants import fold_constants
from .graph_utils import PassError, copy_program
from .layer_norm import decompose_layer_norm
from .layout import simplify_layout
from .pixel_shuffle import decompose_pixel_shuffle
from .rank import float_scalars, signed_expm1, sink_reshapes
from .rotate_half import rewrite_rotate_half
from .sdpa import decompose_sdpa
from .slicing import push_slices, select_to_slice

PassFn = Callable[[ExportedProgram], tuple[ExportedProgram, int]]

# Every pass: ExportedProgram -> (ExportedProgram, number of rewrites). Order matters: constants are folded
# before rotate-half so that its sign lands in the sin table, and again at the end for masks the SDPA
# rewrite made constant.
PASSES: dict[str, PassFn] = {
    "fold_constants": fold_constants,
    "select_to_slice": select_to_slice,
    "simplify_layout": simplify_layout,
    "decompose_sdpa": decompose_sdpa,
    "split_head_sdpa": partial(decompose_sdpa, split_heads=True),
    "decompose_layer_norm": decompose_layer_norm,
    "rotate_half": rewrite_rotate_half,
    "rotate_half_matmul": partial(rewrite_rotate_half, mode="matmul"),
    "sink_reshapes": sink_reshapes,
    "float_scalars": float_scalars,
    "signed_expm1": signed_expm1,
    "push_slices": push_slices,
    "pixel_shuffle": decompose_pixel_shuffle,
}

_COMMON_HEAD = [
    "fold_constants",
    "float_scalars",
    "select_to_slice",
    "pixel_shuffle",
    "simplify_layout",
    "sink_reshapes",
]
_COMMON_TAIL = ["fold_constants", "float_scalars", "simplify_layout"]
PASS_LISTS: dict[str, list[str]] = {
    # XNNPACK takes neither LayerNorm nor select/expand: rewrite them all.
    "xnnpack": _COMMON_HEAD
    + ["decompose_sdpa", "decompose_layer_norm", "rotate_half", "signed_expm1"]
    + _COMMON_TAIL,
    # QNN HTP has a LayerNorm op, wants single-head attention and rank <= 4.
    "qnn": _COMMON_HEAD + ["split_head_sdpa", "rotate_half", "push_slices"] + _COMMON_TAIL,
    # Portable kernels: only what makes the graph smaller.
    "portable": _COMMON_HEAD + ["decompose_sdpa"] + _COMMON_TAIL,
    # TFLite (litert-torch): rank <= 4, explicit attention.
    "tflite": _COMMON_HEAD + ["decompose_sdpa", "rotate_half"] + _COMMON_TAIL,
}
BACKENDS = tuple(PASS_LISTS)


@dataclass
class PassReport:
    name: str
    nodes_before: int
    nodes_after: int
    matches: int
    changed: bool
    seconds: float

    def as_dict(self) -> dict:
        return asdict(self)


def verify(ep: ExportedProgram) -> None:
    """Fail now, not in to_edge: the graph lints, the program verifies, every op has shape metadata."""
    ep.graph_module.graph.lint()
    if ep.graph.find_nodes(op="output") == []:
        raise PassError("the graph has no output node")
    ep.validate()
    missing = [
        n.name for n in ep.graph.nodes if n.op in ("call_function", "placeholder") and "val" not in n.meta
    ]
    if missing:
        raise PassError(f"nodes without meta['val'] (shape/dtype): {missing[:5]}")


def pass_names(backend: str) -> list[str]:
    if backend not in PASS_LISTS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    return list(PASS_LISTS[backend])


def _count_nodes(ep: ExportedProgram) -> int:
    return sum(1 for n in ep.graph.nodes if n.op == "call_function")


def run_passes(
    ep: ExportedProgram, names: list[str], *, progress: bool = False
) -> tuple[ExportedProgram, list[PassReport]]:
    """Apply the named passes in order to a copy of `ep` (weights shared, never modified)."""
    unknown = [n for n in names if n not in PASSES]
    if unknown:
        raise ValueError(f"unknown pass(es) {unknown}; known: {', '.join(PASSES)}")
    ep = copy_program(ep)
    reports = []
    for i, name in enumerate(names):
        before = _count_nodes(ep)
        t0 = time.perf_counter()
        if progress:
            print(f"passes [{i + 1}/{len(names)}] {name} ...", file=sys.stderr, flush=True)
        try:
            ep, matches = PASSES[name](ep)
            verify(ep)
        except PassError as e:
            raise PassError(f"pass {name!r} failed: {e}") from e
        except Exception as e:  # noqa: BLE001 - re-raised with the pass named
            raise PassError(f"pass {name!r} left an invalid program: {type(e).__name__}: {e}") from e
        after = _count_nodes(ep)
        reports.append(PassReport(name, before, after, matches, bool(matches), time.perf_counter() - t0))
    return ep, reports


def apply_with_report(
    ep: ExportedProgram, backend: str, *, progress: bool = False
) -> tuple[ExportedProgram, list[PassReport]]:
    """The backend's pass list on a copy of `ep`, with one report per pass."""
    return run_passes(ep, pass_names(backend), progress=progress)


def apply(ep: ExportedProgram, backend: str) -> ExportedProgram:
    """The backend's pass list on a copy of `ep`: same function, ops the backend runs well."""
    return apply_with_report(ep, backend)[0]
