"""Graph passes on ExportedPrograms that make exported transformers mobile-ready (generic, no VGGT here).

ep = vggt_et.passes.apply(ep, "xnnpack")             # or "qnn", "portable", "tflite"
ep, reports = vggt_et.passes.apply_with_report(ep, "xnnpack")
report = vggt_et.passes.audit_program(ep, "xnnpack")  # audit JSON; format_audit(report) prints it

Owns: the rewrites (one module per idea), the per-backend pass lists and their order constraints (manager.py),
the audit of what a backend takes. Imports: torch, ExecuTorch and `vggt_et.utils` only, never the model, the
pipeline or anything that knows VGGT (tests/test_layout.py checks it); tested on generated toy transformers.
"""

from .activations import explicit_activations
from .audit import audit_program, count_ops, coverage, format_audit, lower_xnnpack, max_compute_rank
from .bounded_attention import (
    DEFAULT_ATTENTION_BUDGET,
    attention_intermediates,
    bound_attention,
    parse_budget,
)
from .broadcast import broadcast_expand
from .fold_constants import fold_constants
from .graph_utils import PassError
from .layer_norm import decompose_layer_norm, decompose_rms_norm
from .layout import simplify_layout
from .manager import (
    BACKENDS,
    ORDER,
    PASS_LISTS,
    PASSES,
    PIPELINES,
    GraphPass,
    PassReport,
    apply,
    apply_with_report,
    check_order,
    pass_names,
    run_passes,
    run_pipeline,
)
from .manual_attention import lift_manual_attention
from .masks import constant_masked_fill
from .partitioning import contiguous_partitions, lean_xnnpack_partitioner
from .pixel_shuffle import decompose_pixel_shuffle
from .rank import float_scalars, signed_expm1, sink_reshapes, split_permutes
from .reductions import reduce_means
from .rotate_half import rewrite_rotate_half
from .sdpa import decompose_sdpa
from .slicing import push_slices, select_to_slice

__all__ = [
    "DEFAULT_ATTENTION_BUDGET",
    "attention_intermediates",
    "bound_attention",
    "constant_masked_fill",
    "lift_manual_attention",
    "parse_budget",
    "BACKENDS",
    "PASSES",
    "PASS_LISTS",
    "PassError",
    "PassReport",
    "apply",
    "apply_with_report",
    "audit_program",
    "count_ops",
    "coverage",
    "decompose_layer_norm",
    "decompose_sdpa",
    "fold_constants",
    "format_audit",
    "lower_xnnpack",
    "contiguous_partitions",
    "lean_xnnpack_partitioner",
    "max_compute_rank",
    "pass_names",
    "rewrite_rotate_half",
    "run_passes",
    "select_to_slice",
    "simplify_layout",
    "sink_reshapes",
    "float_scalars",
    "signed_expm1",
    "push_slices",
    "GraphPass",
    "ORDER",
    "PIPELINES",
    "check_order",
    "run_pipeline",
    "decompose_rms_norm",
    "explicit_activations",
    "broadcast_expand",
    "reduce_means",
    "split_permutes",
    "decompose_pixel_shuffle",
]
