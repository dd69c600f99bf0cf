"""The `vggt-et` command line. Every command: exit 0 on success, 2 with one line on a user error."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import click
from click.core import ParameterSource

from vggt_et.options import (
    BACKENDS,
    DEFAULT_ATTENTION_BUDGET,
    DEFAULT_CALIB_SAMPLES,
    DEFAULT_SOC,
    QUANT_SCHEMES,
)
from vggt_et.utils.errors import UserError


class _Commands(click.Group):
    """Every failure the user can cause is one line on stderr and exit code 2, never a traceback.

    UserError comes from our checks; click's usage errors (unknown flag, missing option) are folded to one
    line too; an OSError that names a file (disk full, read-only file system) is the environment's, not a
    bug. Anything else is a bug: one line, exit 1, and VGGT_ET_DEBUG=1 shows the traceback.
    """

    def main(self, *args, **kwargs):  # type: ignore[override]
        kwargs["standalone_mode"] = False
        try:
            code = super().main(*args, **kwargs)
        except UserError as exc:
            _fail(str(exc), 2)
        except click.UsageError as exc:
            where = exc.ctx.command_path if exc.ctx is not None else "vggt-et"
            _fail(f"{exc.format_message().rstrip('.')} (see '{where} --help')", 2, where)
        except click.ClickException as exc:
            _fail(exc.format_message(), exc.exit_code)
        except click.Abort:
            _fail("aborted", 1)
        sys.exit(code if isinstance(code, int) else 0)

    def invoke(self, ctx: click.Context):  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except (UserError, click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except OSError as exc:
            if exc.filename is None or os.environ.get("VGGT_ET_DEBUG"):
                raise
            _fail(f"{exc.filename}: {exc.strerror or exc}", 2)
        except Exception as exc:
            if os.environ.get("VGGT_ET_DEBUG"):
                raise
            first = str(exc).splitlines()[0] if str(exc) else ""
            _fail(f"internal error: {type(exc).__name__}: {first} (VGGT_ET_DEBUG=1 shows the traceback)", 1)


def _fail(message: str, code: int, where: str = "vggt-et") -> None:
    click.echo(f"{where}: error: {' '.join(message.split())}", err=True)
    sys.exit(code)


@click.group(cls=_Commands)
@click.version_option(package_name="vggt-et")
def main() -> None:
    """vggt-et: compile VGGT into ExecuTorch programs for phones."""
    quiet_third_party()
    log_to_stderr()


def console_script() -> None:
    """The `vggt-et` console script: the CLI in its own process (signal handling is process-wide, so it is
    set here and not in `main`, which tests and other programs call in-process)."""
    _exit_cleanly_on_signals()
    # Our records stop at our handler: ExecuTorch's XNNPACK partitioner calls logging.basicConfig at import,
    # and the root handler would print every progress line a second time. (Not in `main`: programs that
    # call it in-process keep their own logging, pytest's caplog included.)
    logging.getLogger("vggt_et").propagate = False
    main()


def _exit_cleanly_on_signals() -> None:
    """A killed run (job scheduler's SIGTERM, Ctrl-C) stops the programs it started (runner, adb, build),
    removes its temporary files and the lowering's scratch folder, leaves no partial output and exits
    128 + the signal number.

    The handler does the removal itself and leaves with `os._exit` instead of raising `SystemExit`:
    the lowering was seen catching that exception and writing the .pte anyway.
    """
    import os
    import signal

    from vggt_et.utils.cleanup import undo_all

    def stop(signum: int, _frame) -> None:
        undo_all()
        sys.stdout.flush()
        click.echo(f"vggt-et: stopped by signal {signum}; temporary files removed", err=True)
        sys.stderr.flush()
        os._exit(128 + signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, stop)


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is when a record comes (click's test runner swaps it per call)."""

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


class _Format(logging.Formatter):
    """`[vggt-et] stage ...` for progress, `[vggt-et] warning: ...` for warnings."""

    def format(self, record: logging.LogRecord) -> str:
        level = "" if record.levelno < logging.WARNING else f"{record.levelname.lower()}: "
        return f"[vggt-et] {level}{record.getMessage()}"


def log_to_stderr() -> None:
    """Our modules' progress (INFO) and warnings on stderr; the stack's own loggers are left alone."""
    ours = logging.getLogger("vggt_et")
    if not any(isinstance(h, _StderrHandler) for h in ours.handlers):
        handler = _StderrHandler()
        handler.setFormatter(_Format())
        ours.addHandler(handler)
    ours.setLevel(logging.INFO)


def quiet_third_party() -> None:
    """Hide import-time chatter of the stack (torchao's optional CUDA kernels, pytree deprecations)."""
    import warnings

    logging.getLogger("torchao").setLevel(logging.ERROR)
    logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*is an Enum subclass.*")


@main.command()
@click.option("--preset", default=None, help="One preset (default: all).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def info(preset: str | None, as_json: bool) -> None:
    """Presets with parameter counts per part."""
    from vggt_et.commands.info import show_presets

    show_presets(preset, as_json)


def _model_options(f=None, *, preset_default: str | None = "vggt-1b"):
    """--preset/--checkpoint/--random-weights/--seed, shared by every command that builds the model."""

    def decorate(f):
        f = click.option("--seed", default=0, show_default=True, help="Seed for --random-weights.")(f)
        f = click.option(
            "--random-weights", is_flag=True, help="Seeded random weights (no checkpoint needed)."
        )(f)
        f = click.option(
            "--checkpoint",
            type=str,
            default=None,
            help="model.safetensors, official model.pt, or builtin:NAME (a checkpoint shipped with vggt-et).",
        )(f)
        help_text = "Model preset (see `vggt-et info`)" + (
            "." if preset_default else "; default: the one the program was compiled from."
        )
        return click.option(
            "--preset", default=preset_default, show_default=preset_default is not None, help=help_text
        )(f)

    return decorate(f) if f is not None else decorate


def _shape_options(f):
    f = click.option("--width", default=518, show_default=True, help="Image width (multiple of 14).")(f)
    f = click.option("--height", default=518, show_default=True, help="Image height (multiple of 14).")(f)
    f = click.option("--frames", default=2, show_default=True, help="Frames per scene.")(f)
    return f


@main.command()
@_model_options
@click.option(
    "--backend",
    type=click.Choice(BACKENDS),
    default="xnnpack",
    show_default=True,
)
@click.option(
    "--quant",
    type=click.Choice(QUANT_SCHEMES),
    default="fp32",
    show_default=True,
)
@_shape_options
@click.option("--outputs", default="depth", show_default=True, help="Comma list of depth, points, camera.")
@click.option(
    "--calib-data", default=None, help="BlendedMVS-layout folder for calibration (default: synthetic scenes)."
)
@click.option(
    "--calib-samples",
    type=int,
    default=None,
    help=f"Calibration view groups (int8/w4/w4-fisher) [default: {DEFAULT_CALIB_SAMPLES}].",
)
@click.option(
    "--fisher", default=None, help="Fisher statistics from `vggt-et fisher` (for --quant w4-fisher)."
)
@click.option(
    "--w4-budget",
    type=float,
    default=None,
    help="w4-fisher: share of aggregator linear weights kept in 4 bit, the rest 8 bit [default: 0.9].",
)
@click.option(
    "--w4-group-size",
    type=int,
    default=None,
    help="w4/w4-fisher: int4 weights per group of this many inputs, 0 = per channel [default: 32].",
)
@click.option(
    "--keep-float",
    multiple=True,
    help="Layers left in float (repeatable): module-path glob like 'model.depth_head.*' or 're:REGEX'; "
    "replaces the defaults (patch embed, heads' last layers); 'none' quantizes them all.",
)
@click.option(
    "--int8-activations",
    type=click.Choice(["static", "dynamic"]),
    default=None,
    help="int8 on xnnpack: calibrated ranges, or per-token ranges at run time [default: static].",
)
@click.option("--no-rotation", is_flag=True, help="w4-fisher: skip the Hadamard rotation of the stream.")
@click.option("--no-mixed-precision", is_flag=True, help="w4-fisher: every aggregator linear in 4 bit.")
@click.option("--no-fisher-clip", is_flag=True, help="w4-fisher: skip Fisher-weighted weight clipping.")
@click.option(
    "--attention-budget",
    default=f"{DEFAULT_ATTENTION_BUDGET // 2**20}MiB",
    show_default=True,
    help="Most bytes one attention score matrix (and one DPT frame group) may take, e.g. 16MiB; "
    "'none' writes attention out whole (memory grows with frames squared).",
)
@click.option("--soc", default=None, help=f"Qualcomm SoC for --backend qnn [default: {DEFAULT_SOC}].")
@click.option(
    "--max-frames",
    type=int,
    default=None,
    help="One program taking any frame count 1..N (one method each, weights stored once); replaces --frames.",
)
@click.option("-o", "--output", required=True, help="Where to write the .pte.")
@click.option("--report", default=None, help="Compile report JSON (default: OUTPUT with .json).")
@click.option("--etrecord", default=None, help="Also write an ETRecord for ExecuTorch's Inspector.")
@click.option(
    "--stop-before-lowering", is_flag=True, help="Run every stage before lowering; write the program (.pt2)."
)
def compile(**kw) -> None:  # noqa: A001 - the command's name
    """Compile VGGT into a .pte program (plus a JSON report)."""
    from vggt_et.commands.compile import compile_command

    given = click.get_current_context().get_parameter_source("frames") is not ParameterSource.DEFAULT
    if kw["max_frames"] is not None and given:
        raise UserError(
            f"--max-frames {kw['max_frames']} makes one program for 1..{kw['max_frames']} frames and replaces "
            f"--frames {kw['frames']}; drop one of them"
        )
    compile_command(**kw)


@main.command()
@_model_options
@_shape_options
@click.option(
    "--tasks",
    default=None,
    help="Comma list of camera, depth, points [default: every one the preset has; VGGT-Ω has no points].",
)
@click.option(
    "--calib-data", default=None, help="BlendedMVS-layout folder for calibration (default: synthetic scenes)."
)
@click.option(
    "--calib-samples", default=DEFAULT_CALIB_SAMPLES, show_default=True, help="Calibration view groups."
)
@click.option(
    "--no-rotation", is_flag=True, help="Statistics without the rotation (for compile --no-rotation)."
)
@click.option(
    "--keep-activations",
    is_flag=True,
    help="Keep every block's activations for the backward instead of recomputing them: faster, far more RAM.",
)
@click.option(
    "-o", "--output", required=True, help="Where to write the statistics (.pt); a .png heat map beside."
)
def fisher(**kw) -> None:
    """FGQ's diagonal Fisher per task, aggregator block and channel, for --quant w4-fisher."""
    from vggt_et.commands.fisher import fisher_command

    _, summary = fisher_command(**kw)
    click.echo(summary)


@main.command()
@_model_options
@click.option(
    "--backend",
    type=click.Choice([b for b in BACKENDS if b != "portable"]),  # portable runs the xnnpack pass list
    default="xnnpack",
    show_default=True,
)
@_shape_options
@click.option("--outputs", default="depth", show_default=True, help="Comma list of depth, points, camera.")
@click.option("--json", "json_path", default=None, help="Also write the audit as JSON.")
def audit(
    preset, checkpoint, random_weights, seed, backend, frames, height, width, outputs, json_path
) -> None:
    """Per-op coverage of the backend before and after our passes, and delegate segments."""
    from vggt_et.commands.audit import audit_command

    audit_command(
        preset, checkpoint, random_weights, seed, backend, frames, height, width, outputs, json_path
    )


def expand_variadic(args: list[str], flag: str) -> list[str]:
    """`FLAG a b c` → `FLAG a FLAG b FLAG c`: every value after FLAG up to the next option belongs to it
    (click options take one value each; the README documents `--images a.jpg b.jpg`)."""
    expanded: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if arg != flag:
            expanded.append(arg)
            continue
        values = []
        while i < len(args) and not (args[i].startswith("-") and args[i] != "-"):
            values.append(args[i])
            i += 1
        if not values:
            expanded.append(flag)  # click then says the option needs a value
        for value in values:
            expanded += [flag, value]
    return expanded


class _VariadicImages(click.Command):
    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, expand_variadic(args, "--images"))


@main.command(cls=_VariadicImages)
@click.argument("model", type=str)
@click.option(
    "--images", multiple=True, help="One image per frame: --images a.jpg b.jpg (default: a synthetic scene)."
)
@click.option(
    "--intrinsics", default=None, help="fx,fy,cx,cy at the compiled resolution (for depth-only programs)."
)
@click.option("-o", "--out-dir", default="vggt_out", show_default=True)
@click.option("--threads", default=None, type=int)
@click.option("--frames", default=None, type=int, help="Frame count to run (default: the program's largest).")
def run(model, images, intrinsics, out_dir, threads, frames) -> None:
    """Run a .pte on images: depth .npy + colour PNG per frame, points.ply.

    The output folder belongs to vggt-et: a re-run replaces the previous run's files; a folder holding
    other files is refused."""
    from vggt_et.commands.run import run_command

    run_command(model, images, intrinsics, out_dir, threads, frames)


@main.command()
@click.argument("model", type=str)
@_model_options(preset_default=None)
@click.option("--against", default="eager", show_default=True, help="eager, or a .tflite file.")
@click.option("--calib-data", default=None, help="BlendedMVS-layout folder (default: a synthetic scene).")
@click.option("--json", "json_path", default=None)
@click.option("--frames", default=None, type=int, help="Frame count to run (default: the program's largest).")
def compare(model, preset, checkpoint, random_weights, seed, against, calib_data, json_path, frames) -> None:
    """Run the .pte and a reference on the same scene; print relative L2, max error, AbsRel, δ<1.25."""
    from vggt_et.commands.compare import compare_command

    compare_command(model, preset, checkpoint, random_weights, seed, against, calib_data, json_path, frames)


@main.command()
@click.argument("model", type=str)
@click.option("--host", is_flag=True, help="Run the C++ runner on this machine.")
@click.option("--adb-serial", default=None, help="Run on the Android device with this serial.")
@click.option("--runner", default=None, help="Runner binary (default: the one built in android_runner/).")
@click.option("--iters", default=10, show_default=True)
@click.option("--threads", default=None, type=int)
@click.option("--json", "json_path", default=None)
@click.option("--frames", default=None, type=int, help="Frame count to run (default: the program's largest).")
def bench(model, host, adb_serial, runner, iters, threads, json_path, frames) -> None:
    """Benchmark a .pte with the C++ runner, locally or over adb; outputs checked against Python."""
    from vggt_et.commands.bench import bench_command

    bench_command(model, host, adb_serial, runner, iters, threads, json_path, frames)


@main.command()
@click.option("--preset", default="small", show_default=True, help="VGGT preset to train (tiny, small, ...).")
@click.option(
    "--checkpoint",
    default=None,
    help="Start from these weights, a file or builtin:NAME (default: seeded random init).",
)
@click.option("--seed", default=0, show_default=True, help="Seed of the init and of the scenes.")
@click.option("--steps", default=1000, show_default=True, help="Optimizer steps.")
@click.option(
    "--batch-size", default=1, show_default=True, help="Scenes per step (one view count each step)."
)
@click.option("--lr", default=3e-4, show_default=True, help="Peak learning rate (AdamW).")
@click.option("--warmup", default=0.05, show_default=True, help="Share of the steps in linear warm-up.")
@click.option("--weight-decay", default=0.05, show_default=True)
@click.option("--height", default=70, show_default=True, help="Image height (multiple of the patch size).")
@click.option("--width", default=98, show_default=True, help="Image width (multiple of the patch size).")
@click.option("--min-views", default=2, show_default=True, help="Fewest views per scene.")
@click.option("--max-views", default=4, show_default=True, help="Most views per scene.")
@click.option(
    "--scenes", type=int, default=None, help="Cycle this many fixed scenes (default: a new one each step)."
)
@click.option("--fp16", is_flag=True, help="Store the checkpoint in fp16 (half the size; loaders cast back).")
@click.option(
    "--checkpoint-every",
    default=0,
    show_default=True,
    help="Also write -o every this many steps (0: at the end).",
)
@click.option("-o", "--output", required=True, help="Checkpoint to write (.safetensors).")
@click.option("--curve", default=None, help="Loss-curve PNG (default: OUTPUT with .png).")
def train(**kw) -> None:
    """Train VGGT on synthetic scenes (official losses, AdamW, warm-up + cosine); checkpoint + loss curve."""
    from vggt_et.commands.train import train_command

    click.echo(train_command(**kw))


@main.command()
@click.option("-o", "--out-dir", default="vggt_et_demo", show_default=True)
@click.option(
    "--preset",
    type=click.Choice(["tiny", "small", "vggt-omega-tiny"]),
    default=None,
    help="Model preset [default: small with builtin:small-synthetic; a --checkpoint builtin:NAME's preset].",
)
@click.option(
    "--checkpoint",
    default=None,
    help="Weights to compile: a file or builtin:NAME [default: the preset's built-in checkpoint "
    "(builtin:small-synthetic for small), else seeded random weights].",
)
@click.option(
    "--random-weights", is_flag=True, help="Seeded random weights even where a checkpoint is built in."
)
def demo(out_dir: str, preset: str | None, checkpoint: str | None, random_weights: bool) -> None:
    """End to end on embedded defaults: synthetic scene, the shipped trained `small` model, XNNPACK .pte,
    run, compare, and side_by_side.png (input | ground-truth depth | predicted depth | error per frame)."""
    from vggt_et.commands.demo import run_demo

    run_demo(Path(out_dir), preset, checkpoint=checkpoint, random_weights=random_weights)


if __name__ == "__main__":
    console_script()
