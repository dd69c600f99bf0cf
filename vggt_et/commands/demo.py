"""`vggt-et demo`: the whole pipeline on embedded defaults, with nothing to download.

By default the shipped `small` VGGT trained on synthetic scenes (`builtin:small-synthetic`), so the depth
maps, point cloud and side-by-side picture show the scene rather than the noise of random weights. Any
other weights: `--checkpoint` (a file or `builtin:NAME`, whose preset is then the default), or a `--preset`
with no built-in checkpoint (`tiny`, `vggt-omega-tiny`) or `--random-weights` for seeded random weights.
The program is compiled to XNNPACK, run on a rendered synthetic scene, and compared with the eager model;
`side_by_side.png` sets each frame's input, ground-truth depth, predicted depth and error side by side.
Everything it makes lands in one folder.
"""

from __future__ import annotations

from pathlib import Path

import click

SIDE_BY_SIDE = "side_by_side.png"


DEFAULT_CHECKPOINT = "builtin:small-synthetic"  # the trained model the README's first command shows


def demo_weights(
    preset: str | None, checkpoint: str | None, random_weights: bool = False
) -> tuple[str, str | None]:
    """The demo's (preset, checkpoint); checkpoint None means seeded random weights.

    `--checkpoint` wins and names the preset when it is a `builtin:NAME` (else `--preset`, else `tiny`);
    `--random-weights` gives random weights for `--preset` (default `tiny`); otherwise a preset with a
    built-in checkpoint gets it (no `--preset` at all: `DEFAULT_CHECKPOINT`'s), and one without gets random
    weights."""
    from vggt_et.model.builtin import BUILTINS, builtin_checkpoint
    from vggt_et.utils.errors import UserError

    if checkpoint is not None:
        if random_weights:
            raise UserError("--checkpoint and --random-weights exclude each other; give one")
        entry = builtin_checkpoint(checkpoint) if preset is None else None
        return preset or (entry.preset if entry is not None else "tiny"), checkpoint
    if random_weights:
        return preset or "tiny", None
    if preset is None:
        return builtin_checkpoint(DEFAULT_CHECKPOINT).preset, DEFAULT_CHECKPOINT
    shipped = [f"builtin:{e.name}" for e in BUILTINS.values() if e.preset == preset]
    return preset, (shipped[0] if shipped else None)


def run_demo(
    out_dir: Path,
    preset: str | None = None,
    frames: int = 2,
    height: int | None = None,
    width: int | None = None,
    checkpoint: str | None = None,
    random_weights: bool = False,
) -> None:
    """`height`/`width` default to 5 × 7 patches of the preset (70×98 for VGGT, 80×112 for VGGT-Ω).
    The weights and preset are `demo_weights`' choice."""
    from vggt_et.commands.compare import compare
    from vggt_et.data.synthetic import write_synthetic_dataset
    from vggt_et.model.loading import check_model_source, load_model
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
    from vggt_et.outputs.visualize import side_by_side_png
    from vggt_et.utils.files import write_json
    from vggt_et.utils.tables import format_table

    preset, checkpoint = demo_weights(preset, checkpoint, random_weights)
    config = get_preset(preset)
    height = height or 5 * config.patch_size
    width = width or 7 * config.patch_size
    outputs = ("depth", "points", "camera") if "point" in config.HEADS else ("depth", "camera")
    pte = out_dir / f"{preset}_xnnpack_fp32.pte"
    random_weights = checkpoint is None
    check_model_source(preset, checkpoint, random_weights)  # before anything is written
    made = [pte.name, pte.with_suffix(".json").name, "compare.json", SIDE_BY_SIDE, "scenes", "run"]
    folder = claim_output_folder(out_dir, "-o", "demo", made)
    planned = ProgramInfo(
        preset, "xnnpack", "fp32", (1, frames, 3, height, width), tuple(output_names(outputs))
    )
    run_folder = claim_output_folder(out_dir / "run", "-o", "demo", planned_output_names(planned, False))
    out_dir.mkdir(parents=True, exist_ok=True)
    scenes = out_dir / "scenes"
    click.echo(f"1/4 rendering a synthetic scene in BlendedMVS layout -> {scenes}")
    write_synthetic_dataset(scenes, n_scenes=1, n_views=max(4, frames), height=2 * height, width=2 * width)

    weights = "random weights" if random_weights else f"checkpoint {checkpoint}"
    click.echo(f"2/4 compiling {preset} ({weights}) for XNNPACK -> {pte}")
    options = CompileOptions(
        preset=preset, checkpoint=checkpoint, random_weights=random_weights, frames=frames, height=height,
        width=width, outputs=outputs, output=str(pte), report=str(pte.with_suffix(".json")),
    )  # fmt: skip
    from vggt_et.pipeline.compile import compile_model  # imports ExecuTorch: after the checks above

    report = compile_model(options)

    click.echo(f"3/4 running {pte.name} on the scene -> {out_dir / 'run'}")
    info = program_info(pte)
    from vggt_et.commands.compare import scene_inputs

    images, truth, _ = scene_inputs(info, str(scenes), seed=0)
    predicted = run_program(pte, images)
    written = write_outputs(predicted, images, info, run_folder.path, None)
    run_folder.finish(written)
    side_by_side_png(
        out_dir / SIDE_BY_SIDE, images[0].transpose(0, 2, 3, 1), truth["depth"], predicted["depth"][0]
    )

    click.echo("4/4 comparing the program with the eager model")
    eager = load_model(preset, checkpoint, random_weights=random_weights)
    result = compare(pte, eager, calib_data=str(scenes))
    write_json(out_dir / "compare.json", result)
    folder.finish(made)
    rows = [(name, m["rel_l2"], m["max_abs"]) for name, m in result["outputs"].items()]
    click.echo(format_table(["output", "rel_l2 vs eager", "max_abs"], rows))
    click.echo(
        f"\n.pte {report['pte_bytes'] / 2**20:.1f} MiB, {100 * report['delegated_fraction']:.1f}% of compute ops "
        f"delegated in {report['delegate_segments']} segment(s), compiled in {report['total_seconds']:.0f} s"
    )
    click.echo(
        f"made in {out_dir}: {pte.name}, {pte.with_suffix('.json').name}, compare.json, {SIDE_BY_SIDE}, "
        "scenes/, run/"
    )
    click.echo("  run/: " + ", ".join(p.name for p in written))
