"""`vggt-et audit`: export a preset at a shape and show what the backend takes, before and after passes."""

from __future__ import annotations

from typing import Any

import click

from vggt_et.options import ProgramShape, heads_for, parse_outputs
from vggt_et.pipeline.export import export_program
from vggt_et.utils.timing import StageClock


def audit_command(
    preset: str,
    checkpoint: str | None,
    random_weights: bool,
    seed: int,
    backend: str,
    frames: int,
    height: int,
    width: int,
    outputs: str,
    json_path: str | None,
) -> dict[str, Any]:
    """Checks every argument, exports the preset, audits it; prints the table, writes the JSON, returns it."""
    from vggt_et.model.loading import check_model_source, load_model
    from vggt_et.model.presets import get_preset
    from vggt_et.utils import checks

    shape = ProgramShape(frames, height, width, get_preset(preset).patch_size)
    groups = parse_outputs(outputs)
    heads = heads_for(groups)
    check_model_source(preset, checkpoint, random_weights, heads)
    if json_path:
        checks.output_file(json_path, "--json")
        checks.distinct_paths({"--json": json_path}, {"--checkpoint": checkpoint})
    from vggt_et.passes import audit_program, format_audit  # imports ExecuTorch: only once the flags are good

    clock = StageClock()
    with clock.stage("load", preset):
        model = load_model(preset, checkpoint, random_weights=random_weights, seed=seed, heads=heads)
    with clock.stage("export", f"{frames} frames {height}x{width}"):
        ep = export_program(model, shape, groups, batch_dim=backend != "qnn")
    with clock.stage("audit", backend):
        report = audit_program(ep, backend, list(shape.program_input_shape(batch_dim=backend != "qnn")))
    report = {"preset": preset, **report, "stage_seconds": clock.seconds}
    click.echo(format_audit(report))
    if json_path:
        from vggt_et.utils.files import write_json

        write_json(json_path, report)
    return report
