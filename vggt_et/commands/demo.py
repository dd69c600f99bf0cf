"""`vggt-et demo`: the whole pipeline on embedded defaults, with nothing to download.

A `tiny` VGGT (or `vggt-omega-tiny`, `--preset`) with seeded random weights is compiled to XNNPACK, run on
a rendered synthetic scene, and compared with the eager model; everything it makes lands in one folder.
"""

from __future__ import annotations

from pathlib import Path

import click


def run_demo(
    out_dir: Path, preset: str = "tiny", frames: int = 2, height: int | None = None, width: int | None = None
) -> None:
    """`height`/`width` default to 5 × 7 patches of the preset (70×98 for VGGT, 80×112 for VGGT-Ω)."""
    from vggt_et.commands.compare import compare
    from vggt_et.data.synthetic import write_synthetic_dataset
    from vggt_et.model.loading import load_model
    from vggt_et.model.presets import get_preset
    from vggt_et.options import CompileOptions, output_names
    from vggt_et.outputs.folder import claim_output_folder
    from vggt_et.outputs.inference import (
        ProgramInfo,
        planned_output_names,
        program_info,
        run_program,
        write_outputs,
    )
    from vggt_et.pipeline.compile import compile_model
    from vggt_et.utils.files import write_json
    from vggt_et.utils.tables import format_table

    config = get_preset(preset)
    height = height or 5 * config.patch_size
    width = width or 7 * config.patch_size
    outputs = ("depth", "points", "camera") if "point" in config.HEADS else ("depth", "camera")
    pte = out_dir / f"{preset}_xnnpack_fp32.pte"
    made = [pte.name, pte.with_suffix(".json").name, "compare.json", "scenes", "run"]
    folder = claim_output_folder(out_dir, "-o", "demo", made)
    planned = ProgramInfo(
        preset, "xnnpack", "fp32", (1, frames, 3, height, width), tuple(output_names(outputs))
    )
    run_folder = claim_output_folder(out_dir / "run", "-o", "demo", planned_output_names(planned, False))
    out_dir.mkdir(parents=True, exist_ok=True)
    scenes = out_dir / "scenes"
    click.echo(f"1/4 rendering a synthetic scene in BlendedMVS layout -> {scenes}")
    write_synthetic_dataset(scenes, n_scenes=1, n_views=max(4, frames), height=2 * height, width=2 * width)

    click.echo(f"2/4 compiling {preset} (random weights) for XNNPACK -> {pte}")
    options = CompileOptions(
        preset=preset, random_weights=True, frames=frames, height=height, width=width,
        outputs=outputs, output=str(pte), report=str(pte.with_suffix(".json")),
    )  # fmt: skip
    report = compile_model(options)

    click.echo(f"3/4 running {pte.name} on the scene -> {out_dir / 'run'}")
    info = program_info(pte)
    from vggt_et.commands.compare import scene_inputs

    images, _, _ = scene_inputs(info, str(scenes), seed=0)
    written = write_outputs(run_program(pte, images), images, info, run_folder.path, None)
    run_folder.finish(written)

    click.echo("4/4 comparing the program with the eager model")
    result = compare(pte, load_model(preset, random_weights=True), calib_data=str(scenes))
    write_json(out_dir / "compare.json", result)
    folder.finish(made)
    rows = [(name, m["rel_l2"], m["max_abs"]) for name, m in result["outputs"].items()]
    click.echo(format_table(["output", "rel_l2 vs eager", "max_abs"], rows))
    click.echo(
        f"\n.pte {report['pte_bytes'] / 2**20:.1f} MiB, {100 * report['delegated_fraction']:.1f}% of compute ops "
        f"delegated in {report['delegate_segments']} segment(s), compiled in {report['total_seconds']:.0f} s"
    )
    click.echo(f"made in {out_dir}: {pte.name}, {pte.with_suffix('.json').name}, compare.json, scenes/, run/")
    click.echo("  run/: " + ", ".join(p.name for p in written))
