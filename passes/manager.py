"""Named pass lists per backend, run by ExecuTorch's ExportedProgramPassManager with a check after every pass.

`apply(ep, backend)` is what the pipeline calls; `apply_with_report` also says what each pass did, which the
audit prints. A pass that breaks the program fails here, naming the pass, rather than later in `to_edge`.

Every pass is an `ExportedProgramPassBase` (`GraphPass`: a name and a function ExportedProgram → (program,
number of rewrites)). The order a list must keep is stated as `this_before_that_pass_constraint`s in `ORDER`
and checked when this module is imported, so a reordered list fails at once instead of silently producing a
worse program. A list may run a pass twice (the tail re-folds and re-simplifies what the rewrites made); the
second run is its own `GraphPass` instance, so constraints can tell the two apart.

No `steps` (repeat the whole list until nothing changes): on a billion-parameter graph every sweep costs as
much as the first, and the tail re-runs only the three passes whose inputs the rewrites create. Passes that
need a fixed point internally (`simplify_layout`, `sink_reshapes`, `push_slices`) iterate themselves; the
property tests check that a second run of a whole list changes nothing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial

from executorch.exir.pass_base import ExportedProgramPassBase, ExportedProgramPassResult
from executorch.exir.pass_manager import ExportedProgramPassManager
from torch.export import ExportedProgram
from torch.fx.passes.infra.pass_manager import PassManager, this_before_that_pass_constraint

from .activations import explicit_activations
from .bounded_attention import bound_attention
from .broadcast import broadcast_expand
from .fold_constants import fold_constants
from .graph_utils import PassError, copy_program
from .layer_norm import decompose_layer_norm, decompose_rms_norm
from .layout import simplify_layout
from .masks import constant_masked_fill
from .pixel_shuffle import decompose_pixel_shuffle
from .rank import float_scalars, signed_expm1, sink_reshapes, split_permutes
from .reductions import reduce_means
from .rotate_half import rewrite_rotate_half
from .sdpa import decompose_sdpa
from .slicing import push_slices, select_to_slice

logger = logging.getLogger(__name__)

PassFn = Callable[[ExportedProgram], tuple[ExportedProgram, int]]

# Every pass: ExportedProgram -> (ExportedProgram, number of rewrites).
PASSES: dict[str, PassFn] = {
    "fold_constants": fold_constants,
    "select_to_slice": select_to_slice,
    "simplify_layout": simplify_layout,
    "bound_attention": bound_attention,
    "decompose_sdpa": decompose_sdpa,
    "split_head_sdpa": partial(decompose_sdpa, split_heads=True),
    "decompose_layer_norm": decompose_layer_norm,
    "decompose_rms_norm": decompose_rms_norm,
    "explicit_activations": explicit_activations,
    "rotate_half": rewrite_rotate_half,
    "rotate_half_matmul": partial(rewrite_rotate_half, mode="matmul"),
    "sink_reshapes": sink_reshapes,
    "float_scalars": float_scalars,
    "signed_expm1": signed_expm1,
    "push_slices": push_slices,
    "reduce_means": reduce_means,
    "broadcast_expand": broadcast_expand,
    "split_permutes": split_permutes,
    "pixel_shuffle": decompose_pixel_shuffle,
    "constant_masked_fill": constant_masked_fill,
}


@dataclass(frozen=True)
class CountedResult(ExportedProgramPassResult):
    """ExecuTorch's pass result plus how many rewrites the pass made (the report's `matches`)."""

    matches: int = 0


class GraphPass(ExportedProgramPassBase):
    """One named rewrite on an ExportedProgram; `PASSES[name]` unless another function is given."""

    def __init__(self, name: str, fn: PassFn | None = None) -> None:
        self.name = name
        self.fn = fn

    def call(self, exported_program: ExportedProgram) -> CountedResult:
        fn = self.fn if self.fn is not None else PASSES[self.name]
        ep, matches = fn(exported_program)
        return CountedResult(ep, bool(matches), int(matches))

    def __repr__(self) -> str:
        return f"GraphPass({self.name})"


# The passes of the backend lists, one instance per place in a list.
FOLD = GraphPass("fold_constants")
FLOAT_SCALARS = GraphPass("float_scalars")
SELECT_TO_SLICE = GraphPass("select_to_slice")
SIMPLIFY = GraphPass("simplify_layout")
PIXEL_SHUFFLE = GraphPass("pixel_shuffle")
SINK = GraphPass("sink_reshapes")
MASKED_FILL = GraphPass("constant_masked_fill")
BOUND = GraphPass("bound_attention")
SDPA = GraphPass("decompose_sdpa")
SPLIT_HEAD_SDPA = GraphPass("split_head_sdpa")
LAYER_NORM = GraphPass("decompose_layer_norm")
RMS_NORM = GraphPass("decompose_rms_norm")
ACTIVATIONS = GraphPass("explicit_activations")
ROTATE_HALF = GraphPass("rotate_half")
EXPM1 = GraphPass("signed_expm1")
MEANS = GraphPass("reduce_means")
EXPAND = GraphPass("broadcast_expand")
PUSH_SLICES = GraphPass("push_slices")
SPLIT_PERMUTES = GraphPass("split_permutes")
# The tail: cleanups of what the rewrites above produce.
REFOLD = GraphPass("fold_constants")
REFLOAT = GraphPass("float_scalars")
RESIMPLIFY = GraphPass("simplify_layout")

_HEAD = [FOLD, FLOAT_SCALARS, SELECT_TO_SLICE, PIXEL_SHUFFLE, SIMPLIFY, SINK]
_TAIL = [REFOLD, REFLOAT, RESIMPLIFY]
PIPELINES: dict[str, list[GraphPass]] = {
    # XNNPACK takes neither LayerNorm/RMSNorm nor select/expand, nor a mean that is not 4-D over (2, 3).
    "xnnpack": _HEAD
    + [MASKED_FILL, BOUND, SDPA, LAYER_NORM, RMS_NORM, ACTIVATIONS, ROTATE_HALF, EXPM1, MEANS, EXPAND]
    + _TAIL,
    # QNN HTP has a LayerNorm op, wants single-head attention and rank <= 4.
    "qnn": _HEAD + [BOUND, SPLIT_HEAD_SDPA, ROTATE_HALF, PUSH_SLICES, SPLIT_PERMUTES] + _TAIL,
    # Portable kernels: only what makes the graph smaller.
    "portable": _HEAD + [BOUND, SDPA] + _TAIL,
    # TFLite (litert-torch): rank <= 4, explicit attention.
    "tflite": _HEAD + [SDPA, ROTATE_HALF, SPLIT_PERMUTES] + _TAIL,
}
PASS_LISTS: dict[str, list[str]] = {b: [p.name for p in seq] for b, seq in PIPELINES.items()}
BACKENDS = tuple(PASS_LISTS)

_before = this_before_that_pass_constraint
ORDER = [
    # RoPE's sin/cos tables must be constants before rotate-half, so its sign lands in the sin table.
    _before(FOLD, ROTATE_HALF),
    # Expands that feed a broadcasting op are dropped by simplify_layout; only the rest are materialised.
    _before(SIMPLIFY, EXPAND),
    # Masks the SDPA rewrite turned into constant expressions are folded by the tail.
    *(_before(s, REFOLD) for s in (SDPA, SPLIT_HEAD_SDPA)),
    # Reshape chains the rewrites emit are merged by the tail's simplify_layout, so a second run finds none.
    *(
        _before(p, RESIMPLIFY)
        for p in (LAYER_NORM, RMS_NORM, MEANS, EXPAND, ROTATE_HALF, PUSH_SLICES, SPLIT_PERMUTES)
    ),
    # Permutes are split after the last pass that composes or moves them (push_slices).
    _before(PUSH_SLICES, SPLIT_PERMUTES),
    # masked_fill's mask must be a folded constant; the added mask it becomes is what bound_attention lifts.
    _before(FOLD, MASKED_FILL),
    _before(MASKED_FILL, BOUND),
    # Attention is cut into bounded blocks while it is still one SDPA node; the rewrites then see each block.
    *(_before(BOUND, s) for s in (SDPA, SPLIT_HEAD_SDPA)),
    # Single-head attention first: its per-head slices are what push_slices moves.
    _before(SPLIT_HEAD_SDPA, PUSH_SLICES),
    # select/unbind and pixel shuffle are rewritten before the layout pass, which then merges their reshapes.
    _before(SELECT_TO_SLICE, SIMPLIFY),
    _before(PIXEL_SHUFFLE, SIMPLIFY),
]


def check_order(passes: list[GraphPass]) -> None:
    """Raise ValueError when `passes` breaks a constraint of ORDER (torch.fx's schedule validation)."""
    try:
        PassManager(list(passes), constraints=ORDER).validate_constraints()
    except RuntimeError as e:
        raise ValueError(f"pass list out of order: {e}") from e


for _seq in PIPELINES.values():
    check_order(_seq)


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


@dataclass
class _Log:
    reports: list[PassReport] = field(default_factory=list)
    current: str | None = None
    # Whether the program as it stands has been verified. The input is torch.export's (verified when it was
    # made), and a pass that changed nothing leaves a verified program: only changed programs are checked,
    # which keeps the checks' cost (a recompile and `validate` on a billion-parameter graph) where it matters.
    verified: bool = True


class _CheckedPassManager(ExportedProgramPassManager):
    """ExportedProgramPassManager whose check between passes is `verify` (which includes its lint and
    validate, plus the metadata `to_edge` needs), run on every program a pass changed."""

    def __init__(self, passes: list[ExportedProgramPassBase], log: _Log) -> None:
        super().__init__(passes, run_checks_after_each_pass=True)
        self.log = log

    def check(self, exported_program: ExportedProgram) -> None:
        if not self.log.verified:
            verify(exported_program)
            self.log.verified = True


class _Reported(ExportedProgramPassBase):
    """Runs one pass of a list and records its report (the manager keeps only the program)."""

    def __init__(self, step: GraphPass, log: _Log, position: str, progress: bool) -> None:
        self.step, self.log, self.position, self.progress = step, log, position, progress

    def call(self, exported_program: ExportedProgram) -> ExportedProgramPassResult:
        self.log.current = self.step.name
        if self.progress:
            logger.info("passes %s %s ...", self.position, self.step.name)
        before = _count_nodes(exported_program)
        t0 = time.perf_counter()
        result = self.step(exported_program)
        matches = getattr(result, "matches", int(result.modified))
        after = _count_nodes(result.exported_program)
        self.log.verified = self.log.verified and not result.modified
        self.log.reports.append(
            PassReport(self.step.name, before, after, matches, bool(matches), time.perf_counter() - t0)
        )
        return result


def pass_names(backend: str) -> list[str]:
    if backend not in PASS_LISTS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    return list(PASS_LISTS[backend])


def _count_nodes(ep: ExportedProgram) -> int:
    return sum(1 for n in ep.graph.nodes if n.op == "call_function")


def run_pipeline(
    ep: ExportedProgram, passes: list[GraphPass], *, progress: bool = False
) -> tuple[ExportedProgram, list[PassReport]]:
    """Run `passes` in order on a copy of `ep` (weights shared, never modified), verifying after each."""
    ep = copy_program(ep)
    log = _Log()
    steps = [_Reported(p, log, f"[{i + 1}/{len(passes)}]", progress) for i, p in enumerate(passes)]
    manager = _CheckedPassManager(steps, log)
    try:
        result = manager(ep)
    except Exception as e:  # noqa: BLE001 - re-raised as a PassError that names the pass
        cause = e.__cause__ or e
        if log.current is None:
            raise PassError(f"the input program does not verify: {type(cause).__name__}: {cause}") from e
        if isinstance(cause, PassError):
            raise PassError(f"pass {log.current!r} failed: {cause}") from e
        raise PassError(
            f"pass {log.current!r} left an invalid program: {type(cause).__name__}: {cause}"
        ) from e
    return result.exported_program, log.reports


def run_passes(
    ep: ExportedProgram,
    names: list[str],
    *,
    progress: bool = False,
    configured: dict[str, PassFn] | None = None,
) -> tuple[ExportedProgram, list[PassReport]]:
    """Apply the named passes (keys of PASSES) in order to a copy of `ep`.

    `configured`: {name: pass} used instead of PASSES[name], e.g. bound_attention with a user's budget."""
    passes = {**PASSES, **(configured or {})}
    unknown = [n for n in names if n not in passes]
    if unknown:
        raise ValueError(f"unknown pass(es) {unknown}; known: {', '.join(PASSES)}")
    return run_pipeline(ep, [GraphPass(n, passes[n]) for n in names], progress=progress)


def apply_with_report(
    ep: ExportedProgram,
    backend: str,
    *,
    progress: bool = False,
    configured: dict[str, PassFn] | None = None,
) -> tuple[ExportedProgram, list[PassReport]]:
    """The backend's pass list on a copy of `ep`, with one report per pass (`configured`: see run_passes)."""
    pass_names(backend)  # the unknown-backend error
    configured = configured or {}
    pipeline = [
        GraphPass(p.name, configured[p.name]) if p.name in configured else p for p in PIPELINES[backend]
    ]
    return run_pipeline(ep, pipeline, progress=progress)


def apply(ep: ExportedProgram, backend: str) -> ExportedProgram:
    """The backend's pass list on a copy of `ep`: same function, ops the backend runs well."""
    return apply_with_report(ep, backend)[0]
