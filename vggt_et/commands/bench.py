"""`vggt-et bench`: the C++ runner on this machine or a phone over adb; outputs checked against Python."""

from __future__ import annotations

import click

from vggt_et.utils.errors import UserError


def bench_command(
    model: str,
    host: bool,
    adb_serial: str | None,
    runner: str | None,
    iters: int,
    threads: int | None,
    json_path: str | None,
    frames: int | None,
) -> None:
    """Checks the paths and the frame count, then runtime.bench does the work."""
    from vggt_et.runtime import bench as bench_module
    from vggt_et.utils import checks

    checks.input_file(model, "MODEL", ".pte program")
    if runner is not None:
        checks.input_file(runner, "--runner", "runner binary")
    if json_path:
        checks.output_file(json_path, "--json")
        checks.distinct_paths({"--json": json_path}, {"MODEL": model, "--runner": runner})
    method = "forward"
    if frames is not None:
        from vggt_et.outputs.inference import program_info

        method = program_info(model).with_frames(frames).method
    try:
        bench_module.bench_command(
            model, host, adb_serial, runner, iters, threads, json_path, echo=click.echo, method=method
        )
    except bench_module.USER_ERRORS as exc:
        raise UserError(str(exc)) from None
