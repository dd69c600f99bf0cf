"""Quantization recipes by name, and the one entry point the pipeline calls: :func:`quantize_program`.

Pipeline position: ``torch.export`` → graph passes → ``quantize_program`` → ``to_edge_transform_and_lower``.
The program's graph (as the passes left it) is quantized and re-exported, so the result goes straight to
lowering with the backend's partitioner.

=====================  =====================================================  ============
recipe                 what                                                   calibration
=====================  =====================================================  ============
xnnpack-int8           PT2E XNNPACKQuantizer, int8 per-channel weights,       yes (static)
                       static per-tensor int8 activations (``dynamic=True``:  convs only
                       per-token activations on the linears, computed at      (dynamic)
                       run time; 2-D convs stay static, as XNNPACK needs)
xnnpack-8da4w          torchao Int8DynamicActivationIntxWeightConfig on the   convs only
                       linears: int4 weights per group (``group_size``, 0 =
                       per channel), int8 per-token dynamic activations;
                       ``bits_by_layer``: per-layer 4/8-bit plan (8: per
                       channel); 2-D convs (``conv_weights="int8"``):     (convs)
                       PT2E static int8, per-channel weights
qnn-8a8w / -16a8w /    PT2E QnnQuantizer: uint8/uint16 static per-tensor      yes
-16a4w / -16a4w_block  activations, int8/int4 per-channel weights (block:
                       LPBQ per-block int4 on linears, ``block_size``)
=====================  =====================================================  ============
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from torch.export import ExportedProgram
from torch.fx import GraphModule

from .calibration import CalibrationError
from .float_layers import (
    WEIGHTED_OPS,
    compile_patterns,
    layer_path,
    node_is_kept_float,
    repeated_layer_calls,
    unique_in_order,
)


class UnsupportedRecipeError(ValueError):
    """A recipe name, or a (backend, scheme) pair, that has no recipe."""


class UnknownOptionError(ValueError):
    """An option the chosen recipe does not take."""


class NothingQuantizedError(ValueError):
    """A recipe that found no layer to quantize (every layer kept float, or no linear/conv ops)."""


class NotAnExportedProgramError(ValueError):
    """``quantize_program`` was handed something other than a ``torch.export`` program."""


class MissingExampleInputsError(ValueError):
    """No inputs to re-export with: the program carries none and no sample or ``example_inputs`` was given."""


@dataclass(frozen=True)
class Recipe:
    """A named quantization recipe: its backend, scheme, whether it needs calibration, and its options."""

    name: str
    backend: str
    scheme: str
    needs_calibration: bool
    defaults: Mapping[str, Any]
    summary: str


_RECIPES = {
    r.name: r
    for r in (
        Recipe(
            "xnnpack-int8",
            "xnnpack",
            "int8",
            True,
            {"dynamic": False, "per_channel": True, "observer": "histogram"},
            "PT2E XNNPACKQuantizer: int8 per-channel weights, static int8 activations (dynamic: per token)",
        ),
        Recipe(
            "xnnpack-8da4w",
            "xnnpack",
            "8da4w",
            True,  # the convolutions' static ranges; the linears' activations are quantized at run time
            {"group_size": 32, "weight_bits": 4, "bits_by_layer": None, "conv_weights": "int8"},
            "torchao 8da4w on linears: int4 weights per group, dynamic per-token int8 activations; "
            "2-D convolutions: static int8 (PT2E, calibrated)",
        ),
        Recipe("qnn-8a8w", "qnn", "8a8w", True, {"soc_model": "SM8650"}, "QnnQuantizer uint8 act, int8 w"),
        Recipe("qnn-16a8w", "qnn", "16a8w", True, {"soc_model": "SM8650"}, "QnnQuantizer uint16 act, int8 w"),
        Recipe("qnn-16a4w", "qnn", "16a4w", True, {"soc_model": "SM8650"}, "QnnQuantizer uint16 act, int4 w"),
        Recipe(
            "qnn-16a4w_block",
            "qnn",
            "16a4w_block",
            True,
            {"soc_model": "SM8650", "block_size": 64},
            "QnnQuantizer uint16 act, int4 per-block (LPBQ) weights on linears",
        ),
    )
}

#: (backend, scheme) → recipe. Schemes include the CLI's ``--quant`` words (``int8``, ``w4``).
_SCHEMES = {
    ("xnnpack", "int8"): "xnnpack-int8",
    ("xnnpack", "w4"): "xnnpack-8da4w",
    ("xnnpack", "8da4w"): "xnnpack-8da4w",
    ("qnn", "int8"): "qnn-8a8w",
    ("qnn", "8a8w"): "qnn-8a8w",
    ("qnn", "16a8w"): "qnn-16a8w",
    ("qnn", "w4"): "qnn-16a4w",
    ("qnn", "16a4w"): "qnn-16a4w",
    ("qnn", "w4-block"): "qnn-16a4w_block",
    ("qnn", "16a4w_block"): "qnn-16a4w_block",
}


def list_recipes() -> list[str]:
    """Names of every recipe :func:`quantize_program` accepts."""
    return list(_RECIPES)


def get_recipe(name: str) -> Recipe:
    """The :class:`Recipe` called ``name``."""
    if name not in _RECIPES:
        known = ", ".join(_RECIPES)
        raise UnsupportedRecipeError(f"unknown quantization recipe {name!r}; use one of: {known}")
    return _RECIPES[name]


def recipe_for(backend: str, scheme: str) -> str:
    """The recipe name for a backend and scheme, e.g. ``("xnnpack", "w4") -> "xnnpack-8da4w"``."""
    backend, scheme = backend.lower(), scheme.lower()
    if (backend, scheme) in _SCHEMES:
        return _SCHEMES[(backend, scheme)]
    backends = sorted({b for b, _ in _SCHEMES})
    if backend not in backends:
        raise UnsupportedRecipeError(
            f"no quantization recipes for backend {backend!r}; quantized backends are: {', '.join(backends)}"
        )
    schemes = ", ".join(s for b, s in _SCHEMES if b == backend)
    hint = " (float programs need no recipe: skip quantization)" if scheme in ("fp32", "fp16") else ""
    raise UnsupportedRecipeError(
        f"no {backend} recipe for scheme {scheme!r}{hint}; {backend} schemes are: {schemes}"
    )


@dataclass
class QuantizedProgram:
    """The re-exported quantized program and what :func:`quantize_program` did to get it."""

    program: ExportedProgram
    recipe: str
    quantized_layers: list[str]
    float_layers: list[str]
    calibration_samples: int
    seconds: float
    options: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (for the compile report)."""
        return {
            "recipe": self.recipe,
            "options": dict(self.options),
            "quantized_layers": list(self.quantized_layers),
            "float_layers": list(self.float_layers),
            "calibration_samples": self.calibration_samples,
            "seconds": round(self.seconds, 3),
            "notes": list(self.notes),
        }


def _resolve_options(recipe: Recipe, options: Mapping[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(options) - set(recipe.defaults))
    if unknown:
        allowed = ", ".join(recipe.defaults) or "none"
        raise UnknownOptionError(
            f"recipe {recipe.name} takes no option(s) {', '.join(unknown)}; it takes: {allowed}"
        )
    return {**recipe.defaults, **options}


def _example_inputs(
    program: ExportedProgram, example_inputs: tuple | None, samples: Iterable | None
) -> tuple[tuple, dict, Iterable | None]:
    """Inputs to re-export with: given ones, else the program's, else the first sample (put back)."""
    if example_inputs is not None:
        return tuple(example_inputs), {}, samples
    if program.example_inputs is not None:
        args, kwargs = program.example_inputs
        return tuple(args), dict(kwargs or {}), samples
    if samples is not None:
        iterator = iter(samples)
        for first in iterator:
            args = (first,) if isinstance(first, Tensor) else tuple(first)
            return args, {}, itertools.chain([first], iterator)
    raise MissingExampleInputsError(
        "the exported program carries no example inputs and no calibration sample was given; pass "
        "example_inputs=(tensor, ...) matching the export signature"
    )


def _repeated_layers(module: GraphModule, keep, notes: list[str], *, convs_only: bool):
    """The keep-float predicate for PT2E (static) quantization, given layers called more than once, with a
    note naming them.

    ``convs_only`` (8da4w: PT2E quantizes the convolutions alone, with ``ConvQuantizer``, which annotates
    every call): repeated convolutions are quantized at every call with one range over all calls
    (repeated_layers.py; a DPT head run over frame groups). Otherwise (XNNPACK int8, QNN) every repeated
    layer stays float: the stock annotators see a layer's calls as one partition and annotate the first
    only, whose int32 bias the later float calls then read (VGGT-1B int8 at 518² was refused at load);
    annotating the other calls like the first put the frame-group slices before them outside XNNPACK's int8
    delegate on `tiny` (3 segments, and the program did not load)."""
    groups = repeated_layer_calls(module)
    if convs_only:
        paths = unique_in_order(layer_path(c[0]) for c in groups if WEIGHTED_OPS[c[0].target] == "conv")
        if paths:
            notes.append(
                f"{len(paths)} conv layer(s) called more than once are quantized at every call with one range "
                f"over all calls: {_some(paths)}"
            )
        return keep
    shared = {n for calls in groups for n in calls}
    if not shared:
        return keep
    paths = unique_in_order(layer_path(c[0]) for c in groups)
    notes.append(f"{len(paths)} layer(s) called more than once stay float under static int8: {_some(paths)}")
    return lambda node: node in shared or (keep is not None and keep(node))


def _some(paths: list[str]) -> str:
    return ", ".join(paths[:4]) + (f" and {len(paths) - 4} more" if len(paths) > 4 else "")


def _static_int8_convs(
    module: GraphModule, samples: Iterable | None, args: tuple, keep, notes: list[str], *, progress: bool
) -> tuple[GraphModule, list[str], int]:
    """PT2E static int8 on the 2-D convolutions only (per-channel weights, min/max activation ranges
    from ``samples``, or from the example inputs when none are given, which adds a note); everything
    else is left for the linear recipe. Returns the module, the quantized conv layers and the samples
    seen."""
    from .pt2e_recipes import ConvQuantizer, prepare_calibrate_convert

    quantizer = ConvQuantizer(lambda node: keep is None or not keep(node))
    if not any(n.op == "call_function" and quantizer.qualifies(module, n) for n in module.graph.nodes):
        return module, [], 0
    data = [args] if samples is None or _is_empty(samples) else samples
    outcome = prepare_calibrate_convert(module, quantizer, data, progress=progress, desc="conv ranges")
    seen = 0 if data is not samples else outcome.calibration.samples
    if not seen:
        notes.append("conv activation ranges from the example inputs only: pass calibration samples")
    return outcome.converted, outcome.quantized_layers, seen


def quantize_program(
    program: ExportedProgram,
    recipe: str,
    calibration: Iterable[tuple[Tensor, ...]] | None = None,
    *,
    keep_float: Sequence[str] = (),
    progress: bool = True,
    example_inputs: tuple[Tensor, ...] | None = None,
    **options: Any,
) -> QuantizedProgram:
    """Quantize an exported program with a named recipe and re-export it, ready for lowering.

    ``calibration``: input tuples like the export's, required by static recipes (see the module table),
    ignored by dynamic ones. ``keep_float``: module-path globs or ``re:`` regexes whose layers stay in
    float. ``options``: the recipe's own (``dynamic``, ``group_size``, ``block_size``, ``soc_model``...).
    The re-export uses static shapes from ``example_inputs`` (default: the program's own).
    """
    if not isinstance(program, ExportedProgram):
        raise NotAnExportedProgramError(
            f"quantize_program needs a torch.export ExportedProgram, got {type(program).__name__}; "
            "export the model first with torch.export.export(model, example_inputs)"
        )
    spec = get_recipe(recipe)
    resolved = _resolve_options(spec, options)
    keep_float = [keep_float] if isinstance(keep_float, str) else list(keep_float)
    matches = compile_patterns(keep_float) if keep_float else None
    keep = (lambda node: node_is_kept_float(node, matches)) if matches else None
    start = time.perf_counter()
    args, kwargs, calibration = _example_inputs(program, example_inputs, calibration)
    module = program.module()
    notes: list[str] = []
    static_keep = _repeated_layers(module, keep, notes, convs_only=spec.name == "xnnpack-8da4w")
    samples_seen = 0

    if spec.name == "xnnpack-8da4w":
        from .torchao_recipes import quantize_linears_8da4w

        conv_layers: list[str] = []
        if resolved["conv_weights"] == "int8":
            module, conv_layers, samples_seen = _static_int8_convs(
                module, calibration, args, static_keep, notes, progress=progress
            )
        elif resolved["conv_weights"] != "float":
            raise UnknownOptionError(
                f"conv_weights must be 'int8' or 'float', got {resolved['conv_weights']!r}"
            )
        outcome = quantize_linears_8da4w(
            module,
            group_size=resolved["group_size"],
            weight_bits=resolved["weight_bits"],
            keep_float=keep,
            progress=progress,
            bits_by_layer=resolved["bits_by_layer"],
        )
        quantized, converted = conv_layers + outcome.quantized_layers, outcome.module
        kept = [p for p in outcome.float_layers if p not in conv_layers]
        notes += outcome.notes
    else:
        from .pt2e_recipes import prepare_calibrate_convert, qnn_quantizer, xnnpack_quantizer

        conv_layers = []
        if spec.backend == "xnnpack":
            if resolved["dynamic"]:
                # XNNPACK (ExecuTorch 1.5.1) fails at run time on dynamically quantized padded convs:
                # convolutions get static ranges, linears per-token ones.
                module, conv_layers, samples_seen = _static_int8_convs(
                    module, calibration, args, static_keep, notes, progress=progress
                )
            quantizer = xnnpack_quantizer(
                dynamic=resolved["dynamic"],
                per_channel=resolved["per_channel"],
                keep_float=static_keep,
                observer=resolved["observer"],
                linears_only=resolved["dynamic"],
            )
        else:
            quantizer, qnn_notes = qnn_quantizer(
                spec.scheme,
                soc_model=resolved["soc_model"],
                block_size=resolved.get("block_size", 0),
                keep_float=static_keep,
            )
            notes += qnn_notes
        samples = calibration
        if spec.backend == "xnnpack" and resolved["dynamic"]:
            samples = [args]  # per-token activations need no ranges; one run fills the weight observers
        elif calibration is None or _is_empty(calibration):
            raise CalibrationError(
                f"recipe {spec.name} uses static activation ranges and needs calibration samples, got "
                f"{'none' if calibration is None else 'no samples'}; pass calibration=[(tensor, ...), ...]"
            )
        outcome = prepare_calibrate_convert(
            module, quantizer, samples, progress=progress, desc=f"calibrating {spec.name}"
        )
        quantized, converted = conv_layers + outcome.quantized_layers, outcome.converted
        kept = [p for p in outcome.float_layers if p not in conv_layers]
        notes += outcome.notes
        if samples is calibration:
            samples_seen = outcome.calibration.samples
        if spec.scheme == "16a4w_block":
            blocked = len(getattr(quantizer, "block_layers", []))
            notes.append(f"per-block weights on {blocked} of {len(quantized)} quantized layers")

    if not quantized:
        raise NothingQuantizedError(
            f"recipe {spec.name} quantized no layer of this program; check keep_float patterns "
            f"({keep_float}) and that the graph still has aten.linear/conv ops (quantize before "
            "run_decompositions, which turns linear into addmm)"
        )
    if _has_symbolic_inputs(program):
        notes.append("re-exported with the static shapes of the example inputs (the input had dynamic dims)")
    exported = _reexport(converted, args, kwargs)
    one_dequantize_per_user(exported)
    return QuantizedProgram(
        program=exported,
        recipe=spec.name,
        quantized_layers=quantized,
        float_layers=kept,
        calibration_samples=samples_seen,
        seconds=time.perf_counter() - start,
        options=resolved,
        notes=notes,
    )


def _has_symbolic_inputs(program: ExportedProgram) -> bool:
    for node in program.graph.nodes:
        value = node.meta.get("val") if node.op == "placeholder" else None
        if isinstance(value, Tensor) and any(isinstance(d, torch.SymInt) for d in value.shape):
            return True
    return False


def _is_empty(samples: Iterable) -> bool:
    """True for sized collections with no items (checked before the costly prepare; iterators pass)."""
    try:
        return len(samples) == 0  # type: ignore[arg-type]
    except TypeError:
        return False


DEQUANTIZE_OPS = ("dequantize_per_tensor", "dequantize_per_channel")


def one_dequantize_per_user(program: ExportedProgram) -> int:
    """Give every reader of a dequantized tensor its own dequantize node (convert_pt2e does so; the
    re-export merges them again). Returns how many copies were made.

    Why: XNNPACK takes `dq → op → q` as one quantized op and marks its dq nodes implicit; another op that
    reads the same dq node as a float input then gets the quantized tensor, and XNNPACK refuses the
    program at load (`xnn_status_invalid_parameter`). It happens wherever a quantized conv's output feeds
    both a ReLU before the next conv and a residual add (VGGT-Ω's DPT units)."""
    graph = program.graph
    copies = 0
    for node in list(graph.nodes):
        is_dq = node.op == "call_function" and any(op in str(node.target) for op in DEQUANTIZE_OPS)
        # The graph output keeps the original (the signature names it); other readers get copies.
        readers = sorted(node.users, key=lambda user: user.op != "output") if is_dq else []
        for user in readers[1:]:
            with graph.inserting_before(user):
                copy = graph.call_function(node.target, node.args, node.kwargs)
            copy.meta = dict(node.meta)
            user.replace_input_with(node, copy)
            copies += 1
    if copies:
        graph.lint()
        program.graph_module.recompile()
    return copies


def _reexport(module: GraphModule, args: tuple, kwargs: dict) -> ExportedProgram:
    with torch.no_grad():
        return torch.export.export(module, args, kwargs, strict=False)
