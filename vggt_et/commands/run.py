"""`vggt-et run`: a .pte on images (or a synthetic scene); depth, colour PNGs and a point cloud written."""

from __future__ import annotations

from collections.abc import Sequence

import click


def run_command(
    model: str,
    images: Sequence[str],
    intrinsics: str | None,
    out_dir: str,
    threads: int | None,
    frames: int | None,
) -> None:
    """Checks every path before running; the output folder is claimed (a re-run replaces its own files)."""
    from vggt_et.outputs import inference
    from vggt_et.outputs.folder import claim_output_folder
    from vggt_et.utils import checks

    checks.input_file(model, "MODEL", ".pte program")
    for image in images:
        checks.input_file(image, "--images", "image file")
    if threads is not None:
        checks.positive_int(threads, "--threads")
    checks.output_folder(out_dir, "-o")
    info = inference.program_info(model)
    info = info.with_frames(len(images) if images else frames or info.frames)
    K = inference.parse_intrinsics(intrinsics, info.frames) if intrinsics else None
    planned = inference.planned_output_names(info, K is not None)
    folder = claim_output_folder(out_dir, "-o", "run", planned)
    checks.distinct_paths(
        {name: folder.path / name for name in planned}, {"MODEL": model, "--images": images}
    )
    if images:
        arrays = inference.load_images(list(images), info)
    else:
        click.echo("no --images given: running on a synthetic scene", err=True)
        from vggt_et.commands.compare import scene_inputs

        arrays, _, _ = scene_inputs(info, None, seed=0)
    outputs = inference.run_program(model, arrays, threads=threads)
    written = inference.write_outputs(outputs, arrays, info, folder.path, K)
    folder.finish(written)
    click.echo(f"wrote {len(written)} files to {out_dir}: " + ", ".join(p.name for p in written[:8]))
