"""`vggt-et audit`: export a preset at a shape and show what the backend takes, before and after passes."""

from __future__ import annotations

from typing import Any

from vggt_et.compile import OUTPUT_HEADS
from vggt_et.export import ProgramShape, export_program, parse_outputs
from vggt_et.stages import StageClock


def audit_model(
    preset: str,
    checkpoint: str | None,
    random_weights: bool,
    seed: int,
    backend: str,
    frames: int,
    height: int,
    width: int,
    outputs: str,
) -> tuple[dict[str, Any], str]:
    from vggt_et.model.loading import check_model_source, load_model
    from vggt_et.model.presets import get_preset
    from vggt_et.passes import audit_program, format_audit

    shape = ProgramShape(frames, height, width, get_preset(preset).patch_size)
    groups = parse_outputs(outputs)
    heads = sorted({OUTPUT_HEADS[g] for g in groups})
    check_model_source(preset, checkpoint, random_weights, heads)
    clock = StageClock()
    with clock.stage("load", preset):
        model = load_model(preset, checkpoint, random_weights=random_weights, seed=seed, heads=heads)
    with clock.stage("export", f"{frames} frames {height}x{width}"):
        ep = export_program(model, shape, groups, batch_dim=backend != "qnn")
    with clock.stage("audit", backend):
        report = audit_program(ep, backend, list(shape.program_input_shape(batch_dim=backend != "qnn")))
    report = {"preset": preset, **report, "stage_seconds": clock.seconds}
    return report, format_audit(report)
