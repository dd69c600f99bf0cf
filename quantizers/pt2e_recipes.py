"""PT2E recipes: build the backend's quantizer, prepare → calibrate → convert a graph module.

XNNPACK: ExecuTorch's ``XNNPACKQuantizer`` (symmetric int8, per-channel weights, static or dynamic
activations).
QNN: ExecuTorch's ``QnnQuantizer`` (static per-tensor activations, per-channel or per-block weights). Its
annotation passes run without the Qualcomm SDK; the SDK only adds constraint validation, and building the
quantizer without one would try to download it, which :func:`_without_sdk_download` prevents.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import torch
from torch.fx import GraphModule, Node
from torchao.quantization.pt2e.quantizer import (
    DerivedQuantizationSpec,
    QuantizationAnnotation,
    Quantizer,
    SharedQuantizationSpec,
)

from .calibration import CalibrationStats, calibrate, observers
from .float_layers import layer_path, unique_in_order, weighted_layers
from .repeated_layers import share_observers_across_calls


@dataclass
class Pt2eOutcome:
    """The converted module and what happened on the way."""

    converted: GraphModule
    quantized_layers: list[str]
    float_layers: list[str]
    calibration: CalibrationStats | None
    notes: list[str] = field(default_factory=list)


#: Static activation observers for ``xnnpack-int8``: ExecuTorch's default (histogram: ranges that minimise
#: quantization error, slower per call) or plain running min/max (fast, outlier-sensitive).
ACTIVATION_OBSERVERS = ("histogram", "minmax")


class UnknownObserverError(ValueError):
    """An activation observer name the recipe does not offer."""


def symmetric_config(dynamic: bool, per_channel: bool, observer: str = "histogram"):
    """ExecuTorch's symmetric XNNPACK config, with a min/max activation observer when asked."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import get_symmetric_quantization_config
    from torchao.quantization.pt2e import MinMaxObserver

    if observer not in ACTIVATION_OBSERVERS:
        raise UnknownObserverError(
            f"unknown activation observer {observer!r}; use one of: {', '.join(ACTIVATION_OBSERVERS)}"
        )
    config = get_symmetric_quantization_config(is_per_channel=per_channel, is_dynamic=dynamic)
    if observer == "minmax" and not dynamic:
        spec = dataclasses.replace(
            config.input_activation, observer_or_fake_quant_ctr=MinMaxObserver.with_args(eps=2**-12)
        )
        config = dataclasses.replace(config, input_activation=spec, output_activation=spec)
    return config


def xnnpack_quantizer(
    *,
    dynamic: bool,
    per_channel: bool,
    keep_float: Callable[[Node], bool] | None,
    observer: str = "histogram",
    linears_only: bool = False,
) -> Quantizer:
    """XNNPACKQuantizer with the symmetric config; nodes for which ``keep_float`` is true stay in float,
    and with ``linears_only`` so does every node that is not an ``aten.linear``."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import XNNPACKQuantizer

    config = symmetric_config(dynamic, per_channel, observer)
    quantizer = XNNPACKQuantizer()
    if linears_only:  # only the linear patterns are tried: others may meet already-quantized inputs
        quantizer.set_operator_type(torch.ops.aten.linear.default, config)
    else:
        quantizer.set_global(config)
    if keep_float is None:
        return quantizer
    quantizer.set_filter_function(lambda node: not keep_float(node))
    # XNNPACK's static int8 conv/linear must write int8: a quantized layer whose only readers are kept
    # float keeps its quantized output (the kept layer reads it dequantized), or it would not lower.
    return FloatLayerQuantizer(quantizer, keep_float, quantized_outputs_stay=True)


class ConvQuantizer(Quantizer):
    """Static int8 on every standard 2-D convolution that ``accept`` takes, nothing else: per-channel
    weights, per-tensor activations from a min/max observer, quantized output (XNNPACK's qs8 conv).

    Stands beside a linear-only recipe (8da4w) so a ViT's conv head is not left in fp32. Dynamic
    activations would need no calibration, but ExecuTorch 1.5.1's XNNPACK fails at run time on
    dynamically quantized convolutions ("Propagating input shapes failed"), even from its own
    XNNPACKQuantizer; static ones run.
    """

    def __init__(self, accept: Callable[[Node], bool]) -> None:
        super().__init__()
        self.config = symmetric_config(dynamic=False, per_channel=True, observer="minmax")
        self.accept = accept

    def qualifies(self, model: GraphModule, node: Node) -> bool:
        if node.target is not torch.ops.aten.conv2d.default or not self.accept(node):
            return False
        groups = node.args[6] if len(node.args) > 6 else 1
        shape = _weight_shape(model, node)
        return groups == 1 and shape is not None and len(shape) == 4

    def annotate(self, model: GraphModule) -> GraphModule:
        for node in model.graph.nodes:
            if node.op == "call_function" and self.qualifies(model, node):
                specs = {node.args[0]: self.config.input_activation, node.args[1]: self.config.weight}
                bias = node.args[2] if len(node.args) > 2 else None
                if isinstance(bias, Node) and self.config.bias is not None:
                    specs[bias] = self.config.bias
                node.meta[ANNOTATION_KEY] = QuantizationAnnotation(
                    input_qspec_map=specs, output_qspec=self.config.output_activation, _annotated=True
                )
        return model

    def validate(self, model: GraphModule) -> None:
        pass


@contextlib.contextmanager
def _without_sdk_download() -> Iterator[bool]:
    """While building a QnnQuantizer without ``QNN_SDK_ROOT``, make SDK setup fail fast, not download.

    ExecuTorch then falls back to its no-op op-info checker (no constraint validation). Yields whether the
    SDK is configured. The patch is undone on exit, so a later lowering that has the SDK is unaffected.
    """
    if os.environ.get("QNN_SDK_ROOT"):
        yield True
        return
    from executorch.backends.qualcomm.utils import qnn_sdk_setup

    def refuse_setup() -> None:
        raise RuntimeError("QNN_SDK_ROOT is not set; vggt-et does not download the QNN SDK")

    original = qnn_sdk_setup.setup_qnn_sdk
    qnn_sdk_setup.setup_qnn_sdk = refuse_setup
    try:
        yield False
    finally:
        qnn_sdk_setup.setup_qnn_sdk = original


#: QNN scheme → ``QuantDtype`` member name.
QNN_DTYPES = {scheme: f"use_{scheme}" for scheme in ("8a8w", "16a8w", "16a4w", "16a4w_block")}


class UnknownSocError(ValueError):
    """A Qualcomm SoC name the installed ExecuTorch does not know."""


def qnn_quantizer(
    scheme: str, *, soc_model: str, block_size: int, keep_float: Callable[[Node], bool] | None
) -> tuple[Quantizer, list[str]]:
    """QnnQuantizer for ``scheme`` (one of :data:`QNN_DTYPES`), wrapped so keep-float and block sizes apply
    to the graph it actually annotates (after its own transforms rename nodes). Returns (quantizer, notes)."""
    import logging

    from executorch.backends.qualcomm.quantizer.quantizer import QnnQuantizer, QuantDtype
    from executorch.backends.qualcomm.serialization.qc_schema import QcomChipset

    try:
        chipset = QcomChipset[soc_model]
    except KeyError:
        known = ", ".join(sorted(c.name for c in QcomChipset))
        raise UnknownSocError(f"unknown Qualcomm SoC {soc_model!r}; use one of: {known}") from None

    notes = []
    logger = logging.getLogger()
    level = logger.level
    with _without_sdk_download() as has_sdk:
        if not has_sdk:
            logger.setLevel(logging.ERROR)  # the fallback warning is expected here; we report it as a note
            notes.append("QNN SDK not configured: annotation without op-constraint validation")
        try:
            inner = QnnQuantizer(soc_model=chipset)
        finally:
            logger.setLevel(level)
    inner.set_default_quant_config(
        getattr(QuantDtype, QNN_DTYPES[scheme]), is_conv_per_channel=True, is_linear_per_channel=True
    )
    return _QnnFloatLayerQuantizer(inner, keep_float, block_size if scheme == "16a4w_block" else 0), notes


class FloatLayerQuantizer(Quantizer):
    """Wraps a backend quantizer so keep-float nodes get no q/dq on any side.

    Before annotation (on the graph the backend's own transforms produced, so node names are final) the
    subclass hook may configure the inner quantizer; after it, :func:`isolate_float_nodes` removes what
    the inner quantizer's neighbouring annotations would still put on the kept nodes' edges.
    """

    def __init__(
        self,
        inner: Quantizer,
        keep_float: Callable[[Node], bool] | None,
        *,
        quantized_outputs_stay: bool = False,
    ) -> None:
        super().__init__()
        self.inner = inner
        self.keep_float = keep_float
        self.quantized_outputs_stay = quantized_outputs_stay

    def transform_for_annotation(self, model: GraphModule) -> GraphModule:
        return self.inner.transform_for_annotation(model)

    def before_annotate(self, model: GraphModule, kept: set[Node]) -> None:
        """Hook for backend-specific configuration that needs the final graph."""

    def annotate(self, model: GraphModule) -> GraphModule:
        kept = set()
        if self.keep_float is not None:
            kept = {n for n in model.graph.nodes if n.op == "call_function" and self.keep_float(n)}
        self.before_annotate(model, kept)
        model = self.inner.annotate(model)
        if kept:
            isolate_float_nodes(model, kept, quantized_outputs_stay=self.quantized_outputs_stay)
        return model

    def validate(self, model: GraphModule) -> None:
        self.inner.validate(model)


class _QnnFloatLayerQuantizer(FloatLayerQuantizer):
    """QnnQuantizer: keep-float nodes become its discarded nodes, and every other linear whose input width
    the block size divides gets a per-block (LPBQ) weight config."""

    def __init__(self, inner: Quantizer, keep_float: Callable[[Node], bool] | None, block_size: int) -> None:
        super().__init__(inner, keep_float)
        self.block_size = block_size
        self.block_layers: list[str] = []

    def before_annotate(self, model: GraphModule, kept: set[Node]) -> None:
        self.inner.add_discard_nodes(sorted(n.name for n in kept))
        if not self.block_size:
            return
        block_map = {}
        for node in weighted_layers(model):
            shape = _weight_shape(model, node)
            if node.target == torch.ops.aten.linear.default and node not in kept and shape:
                if shape[1] % self.block_size == 0:
                    block_map[node.name] = (1, self.block_size)
                    self.block_layers.append(layer_path(node))
        self.inner.set_block_size_map(block_map)


ANNOTATION_KEY = "quantization_annotation"


def _spec_sources(spec: object) -> list:
    """Edges ``(producer, consumer)`` or nodes a shared / derived spec takes its observer from."""
    if isinstance(spec, SharedQuantizationSpec):
        return [spec.edge_or_node]
    if isinstance(spec, DerivedQuantizationSpec):
        return list(spec.derived_from)
    return []


def _is_observed(edge_or_node: object) -> bool:
    if isinstance(edge_or_node, tuple):
        producer, consumer = edge_or_node
        annotation = consumer.meta.get(ANNOTATION_KEY)
        return annotation is not None and annotation.input_qspec_map.get(producer) is not None
    annotation = edge_or_node.meta.get(ANNOTATION_KEY)
    return annotation is not None and annotation.output_qspec is not None


_CATS = (torch.ops.aten.cat.default, torch.ops.aten.concat.default)


def _observes_weights_only(annotation: QuantizationAnnotation) -> bool:
    """Every input the annotation still quantizes is a stored tensor (weight, bias): no activation input."""
    producers = annotation.input_qspec_map
    return bool(producers) and all(p.op == "get_attr" for p in producers)


def isolate_float_nodes(model: GraphModule, kept: set[Node], *, quantized_outputs_stay: bool = False) -> None:
    """Drop annotations that would quantize the inputs or outputs of ``kept`` nodes.

    Kept nodes lose their own annotation; other nodes stop observing inputs that come from kept nodes,
    and stop quantizing their output when only kept nodes read it (unless ``quantized_outputs_stay``: a
    backend whose quantized ops must write quantized values, the kept node then reads them dequantized).
    Shared or derived specs that pointed at something no longer observed are dropped too, until nothing
    changes. A layer left observing only its weight (its activation input came from a kept node) loses its
    whole annotation: a quantized weight under a float input has no int8 kernel, so its dequantize fell
    outside the delegate and the program had no out-variant for it.
    """
    for node in kept:
        node.meta.pop(ANNOTATION_KEY, None)
    # A concatenation observes all its inputs as one range (QNN's ConcatObserver looks up every input's
    # observer): if isolation takes the quantization off one input, the whole cat has to stay float.
    whole_cats = {
        node
        for node in model.graph.nodes
        if node.target in _CATS
        and ANNOTATION_KEY in node.meta
        and all(i in node.meta[ANNOTATION_KEY].input_qspec_map for i in node.args[0] if isinstance(i, Node))
    }
    lost_input: set[Node] = set()
    for node in model.graph.nodes:
        annotation = node.meta.get(ANNOTATION_KEY)
        if annotation is None:
            continue
        for producer in [p for p in annotation.input_qspec_map if p in kept]:
            del annotation.input_qspec_map[producer]
            lost_input.add(node)
        only_kept_read = node.users and all(u in kept for u in node.users)
        if annotation.output_qspec is not None and only_kept_read and not quantized_outputs_stay:
            annotation.output_qspec = None
    changed = True
    while changed:
        changed = False
        for node in model.graph.nodes:
            annotation = node.meta.get(ANNOTATION_KEY)
            if annotation is None:
                continue
            for producer, spec in list(annotation.input_qspec_map.items()):
                if not all(_is_observed(source) for source in _spec_sources(spec)):
                    del annotation.input_qspec_map[producer]
                    lost_input.add(node)
                    changed = True
            if node in lost_input and _observes_weights_only(annotation):
                node.meta.pop(ANNOTATION_KEY)
                changed = True
                continue
            if not all(_is_observed(source) for source in _spec_sources(annotation.output_qspec)):
                annotation.output_qspec = None
                changed = True
            if node in whole_cats and any(
                i not in annotation.input_qspec_map for i in node.args[0] if isinstance(i, Node)
            ):
                node.meta.pop(ANNOTATION_KEY)
                changed = True


def _weight_shape(model: GraphModule, node: Node) -> tuple[int, ...] | None:
    weight = node.args[1] if len(node.args) > 1 else None
    if not isinstance(weight, Node):
        return None
    value = weight.meta.get("val")
    if value is None and weight.op == "get_attr":
        value = model
        for part in str(weight.target).split("."):
            value = getattr(value, part)
    return tuple(value.shape) if isinstance(value, torch.Tensor) else None


def _observed_layers(prepared: GraphModule) -> tuple[list[str], list[str]]:
    """Layers whose weight feeds through an observer (quantized) and those that do not (float)."""
    observer_names = set(observers(prepared))
    quantized, kept = [], []
    for node in weighted_layers(prepared):
        weight = node.args[1] if len(node.args) > 1 else None
        observed = isinstance(weight, Node) and weight.op == "call_module" and weight.target in observer_names
        (quantized if observed else kept).append(layer_path(node))
    quantized = unique_in_order(quantized)
    return quantized, [p for p in unique_in_order(kept) if p not in quantized]


def prepare_calibrate_convert(
    module: GraphModule, quantizer: Quantizer, samples: Iterable, *, progress: bool, desc: str
) -> Pt2eOutcome:
    """``prepare_pt2e`` → calibration over ``samples`` (every observer must see data) → ``convert_pt2e``."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):  # QnnQuantizer prints each op it has no config for
        prepared = prepare_pt2e(module, quantizer)
    share_observers_across_calls(prepared)  # one range per repeated layer, over all its calls
    notes = unique_in_order(line.strip() for line in printed.getvalue().splitlines() if line.strip())
    stats = calibrate(prepared, samples, progress=progress, desc=desc)
    quantized, kept = _observed_layers(prepared)
    converted = convert_pt2e(prepared)
    return Pt2eOutcome(converted, quantized, kept, stats, notes)
