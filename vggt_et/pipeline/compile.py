"""`vggt-et compile`: checkpoint → fixed-shape export → passes → (quantize) → lower → .pte + report.

Every argument is checked before the first heavy stage, so a typo costs seconds, not a 5-minute
compile; the .pte is written atomically.
"""

from __future__ import annotations

import hashlib
import platform
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch

from vggt_et.options import (
    CALIBRATED_SCHEMES,
    CompileOptions,
    ProgramShape,
    frame_method,
    heads_for,
    output_names,
)
from vggt_et.passes.bounded_attention import bound_attention
from vggt_et.pipeline.export import bound_head_frames, example_images, export_program
from vggt_et.pipeline.lowering import lower, to_executorch
from vggt_et.pipeline.quantize import w4_group_size
from vggt_et.pipeline.validation import validate
from vggt_et.pipeline.weight_spill import lean_lowering
from vggt_et.utils.files import atomic_write, write_json
from vggt_et.utils.timing import StageClock, peak_rss_bytes


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": platform.python_version()}
    for package in ("torch", "executorch", "torchao", "vggt-et"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "not installed"
    return found


def quantization_stage(
    ep, options: CompileOptions, shape: ProgramShape, report: dict, layer_bits: dict[str, int] | None = None
) -> Any:
    """int8 / w4 recipes from vggt_et.quantizers, calibrated on BlendedMVS-layout scenes.

    `layer_bits`: w4-fisher's {layer: 4 or 8} plan for the aggregator linears."""
    from vggt_et.pipeline.quantize import quantize_for_backend

    quantized, details = quantize_for_backend(ep, options, shape, layer_bits=layer_bits)
    report["quantization"] = details
    return quantized


def compile_model(
    options: CompileOptions,
    *,
    quiet: bool = False,
    checked: tuple[ProgramShape, tuple[str, ...]] | None = None,
) -> dict[str, Any]:
    """Run the whole pipeline; returns the compile report (ARCHITECTURE.md contract).

    `checked`: what `validate(options)` returned, when the caller has already run it (the CLI does, before
    importing this module), so its warnings are not given twice."""
    shape, outputs = checked or validate(options)
    clock = StageClock(quiet=quiet)
    report: dict[str, Any] = {
        "backend": options.backend,
        "quant": options.quant,
        "preset": options.preset,
        "input_shape": list(shape.program_input_shape(batch_dim=options.backend != "qnn")),
        "input_names": ["images"],
        "outputs": output_names(outputs),
        "soc": options.qnn_soc if options.backend == "qnn" else None,
        "arguments": asdict(options),
        "versions": versions(),
    }
    from vggt_et.model.loading import load_model

    heads = heads_for(outputs)
    with clock.stage(
        "load", f"{options.preset} ({'random weights' if options.random_weights else options.checkpoint})"
    ):
        model = load_model(
            options.preset,
            options.checkpoint,
            random_weights=options.random_weights,
            seed=options.seed,
            heads=heads,
        )
        if options.quant == "fp16":
            model = model.half()
        itemsize = 2 if options.quant == "fp16" else 4
        report["head_frames"] = bound_head_frames(model, shape, options.attention_budget, itemsize)
        report["weight_bytes"] = sum(p.numel() * p.element_size() for p in model.parameters())
    layer_bits = None
    if options.quant == "w4-fisher":
        from vggt_et.fgq.w4_fisher import w4_fisher_stage

        with clock.stage("w4-fisher", "rotation, Fisher, 4/8-bit plan, clipping"):
            layer_bits, report["w4_fisher"] = w4_fisher_stage(
                model, options, shape, outputs, w4_group_size(options)
            )
    from vggt_et.passes import apply_with_report

    def build(model: torch.nn.Module, shape: ProgramShape):
        """Export, passes and quantization of the program for `shape` (one method of the .pte)."""
        with clock.stage(
            "export", f"{shape.frames} frames {shape.height}x{shape.width}, outputs {','.join(outputs)}"
        ):
            # QNN's HTP wants rank <= 4 everywhere: its programs take [S, 3, H, W] and drop the batch dim.
            dtype = torch.float16 if options.quant == "fp16" else None
            ep = export_program(model, shape, outputs, dtype=dtype, batch_dim=options.backend != "qnn")
        pass_backend = "xnnpack" if options.backend == "portable" else options.backend
        with clock.stage("passes", pass_backend):
            budget = options.attention_budget
            ep, pass_reports = apply_with_report(
                ep,
                pass_backend,
                progress=not quiet,
                configured={"bound_attention": lambda e: bound_attention(e, budget)},
            )
        report["passes"] = [
            {"name": r.name, "changed": r.changed, "matches": r.matches} for r in pass_reports
        ]
        if options.quant in CALIBRATED_SCHEMES:
            with clock.stage("quantize", options.quant):
                ep = quantization_stage(ep, options, shape, report, layer_bits=layer_bits)
        return ep

    # One method per frame count with --max-frames (the largest is "forward"), else "forward" alone.
    counts = range(1, shape.frames + 1) if options.max_frames else [shape.frames]
    methods = {k: frame_method(k, shape.frames) for k in counts}
    programs = {methods[k]: build(model, replace(shape, frames=k)) for k in counts}
    report["frame_methods"] = {str(k): name for k, name in methods.items()}
    del model
    ep = programs["forward"] if len(programs) == 1 else programs
    if options.stop_before_lowering:
        with clock.stage("save", "exported program (stopped before lowering)"):
            _save_exported(options.output, ep)
        return _finish(report, clock, options, lowered=None)
    if options.backend == "tflite":
        from vggt_et.pipeline.tflite import convert_tflite

        with clock.stage("lower", "litert-torch"):
            data = convert_tflite(ep, example_images(shape))
        with clock.stage("write"):
            atomic_write(options.output, lambda f: f.write(data))
        return _finish(report, clock, options, lowered=None)
    keys = ("preset", "backend", "quant", "input_shape", "outputs", "frame_methods")
    metadata = {k: report[k] for k in keys}
    # Lowering and writing share one scratch folder for the spilled weight blobs (weight_spill.py).
    with lean_lowering(Path(options.output).resolve().parent, spill=not options.etrecord) as spilled:
        with clock.stage("lower", f"to_edge_transform_and_lower ({options.backend})"):
            edge = lower(ep, options.backend, options.qnn_soc, metadata, etrecord=bool(options.etrecord))
        del ep
        lowered = edge.exported_program()
        with clock.stage("to_executorch"):
            program = to_executorch(edge)
        if options.etrecord:
            with clock.stage("etrecord", options.etrecord):
                atomic_write(options.etrecord, program.get_etrecord().save)
        with clock.stage("write", options.output):
            # Streamed from the serialiser's segments and spilled files: no in-memory copy of the weights.
            atomic_write(options.output, program.write_to_file)
    report["spilled_weight_bytes"] = spilled.bytes
    return _finish(report, clock, options, lowered=lowered)


def _save_exported(path: str, ep) -> None:
    """torch.export.save of the pre-lowering program (.pt2), e.g. for QNN users without the SDK."""
    atomic_write(path, lambda f: torch.export.save(ep, f))


def _file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 24), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _finish(report: dict, clock: StageClock, options: CompileOptions, lowered) -> dict:
    from vggt_et.passes import coverage

    report["pte_path"] = str(Path(options.output).resolve())
    report["pte_bytes"] = Path(options.output).stat().st_size
    report["sha256"] = _file_sha256(options.output)
    if lowered is not None:
        cov = coverage(lowered)
        report["delegated_fraction"] = cov["delegated_fraction"]
        report["delegate_segments"] = cov["delegate_segments"]
        report["non_delegated"] = cov["non_delegated"]
    else:
        report.update({"delegated_fraction": None, "delegate_segments": None, "non_delegated": None})
    report["stage_seconds"] = {k: round(v, 3) for k, v in clock.seconds.items()}
    report["total_seconds"] = round(clock.total, 3)
    report["peak_rss_bytes"] = peak_rss_bytes()
    report["peak_rss_over_weights"] = round(report["peak_rss_bytes"] / max(report["weight_bytes"], 1), 3)
    if options.report:
        write_json(options.report, report)
    return report
