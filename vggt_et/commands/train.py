"""`vggt-et train`: train a VGGT preset on synthetic scenes generated on the fly; write a safetensors
checkpoint and a loss-curve PNG.

A command, not a script under tools/: it is installed with the package, so the recipe a checkpoint's model
card names (`vggt-et train --preset small ... --seed S`) runs anywhere vggt-et does; it gets the commands'
up-front checks (a bad flag costs a second, exit 2 with one line, nothing written), their logging and their
signal handling (a stopped run leaves no temporary files, and the checkpoint at -o is always a whole one);
and its output loads straight into every other command as `--checkpoint`.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from vggt_et.utils.errors import UserError

logger = logging.getLogger(__name__)


def curve_path(output: str) -> str:
    """The loss-curve PNG's default path: beside the checkpoint, same name, .png."""
    return str(Path(output).with_suffix(".png"))


def train_command(
    *,
    preset: str,
    checkpoint: str | None,
    seed: int,
    steps: int,
    batch_size: int,
    lr: float,
    warmup: float,
    weight_decay: float,
    height: int,
    width: int,
    min_views: int,
    max_views: int,
    scenes: int | None,
    fp16: bool,
    checkpoint_every: int,
    output: str,
    curve: str | None,
    progress: bool = True,
) -> str:
    """Check everything, train, write the checkpoint (and the curve); return a summary table."""
    from vggt_et.model.presets import VGGTConfig, get_preset
    from vggt_et.utils import checks

    config = get_preset(preset)
    if not isinstance(config, VGGTConfig):
        raise UserError(f"--preset {preset}: training covers the VGGT presets only; choose tiny or small")
    for flag, value in (("--steps", steps), ("--batch-size", batch_size), ("--min-views", min_views)):
        checks.positive_int(value, flag)
    if max_views < min_views:
        raise UserError(f"--max-views {max_views} is below --min-views {min_views}; raise --max-views")
    if scenes is not None:
        checks.positive_int(scenes, "--scenes")
    if checkpoint_every < 0:
        raise UserError(f"--checkpoint-every must be 0 (only at the end) or more, got {checkpoint_every}")
    if not lr > 0:
        raise UserError(f"--lr must be positive, got {lr}")
    if not 0 <= warmup < 1:
        raise UserError(f"--warmup is a share of the steps in [0, 1), got {warmup}")
    if weight_decay < 0:
        raise UserError(f"--weight-decay must be 0 or more, got {weight_decay}")
    patch = config.patch_size
    for flag, value in (("--height", height), ("--width", width)):
        if value < patch or value % patch:
            raise UserError(
                f"{flag} {value} must be a positive multiple of {patch} (the patch size of {preset})"
            )
    curve = curve or curve_path(output)
    checks.output_file(output, "-o")
    checks.output_file(curve, "--curve")
    checks.distinct_paths({"-o": output, "--curve": curve}, {"--checkpoint": checkpoint})
    from vggt_et.data.synthetic import SceneVariety
    from vggt_et.model.loading import check_model_source, load_model
    from vggt_et.training.loop import TRAIN_HEADS, TrainConfig, plot_loss_curve, save_checkpoint, train

    heads = list(TRAIN_HEADS)
    check_model_source(preset, checkpoint, checkpoint is None, heads)

    train_config = TrainConfig(
        preset=preset,
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        warmup=warmup,
        weight_decay=weight_decay,
        seed=seed,
        scenes=scenes,
        variety=SceneVariety(height=height, width=width, views=(min_views, max_views)),
        checkpoint_every=checkpoint_every,
    )
    model = load_model(preset, checkpoint, random_weights=checkpoint is None, seed=seed, heads=heads)
    started = time.strftime("%Y-%m-%dT%H:%M:%S")
    logger.info(
        "training %s (%s) for %d steps at %dx%d, %d-%d views", preset,
        f"from {checkpoint}" if checkpoint else f"random init, seed {seed}", steps, height, width, min_views,
        max_views,
    )  # fmt: skip

    def write(model, step: int) -> None:
        metadata = {
            "format": "pt",
            "preset": preset,
            "step": str(step),
            "train_config": train_config.to_json(),
            "init": checkpoint or f"random, seed {seed}",
            "started": started,
        }
        save_checkpoint(model, output, fp16=fp16, metadata=metadata)
        logger.info("step %d: wrote %s", step, output)

    result = train(model, train_config, on_checkpoint=write, progress=progress)
    plot_loss_curve(result.history, curve, title=f"vggt-et train --preset {preset} (seed {seed})")
    return summary(result.history, result.seconds, output, curve)


def summary(history: list[dict[str, float]], seconds: float, output: str, curve: str) -> str:
    """Loss parts at the start and the end (means over the first and last tenth of the steps)."""
    from vggt_et.utils.tables import format_table

    span = max(1, len(history) // 10)
    keys = [k for k in history[0] if k.startswith("loss_") or k == "objective"]
    rows = [
        [key, sum(h[key] for h in history[:span]) / span, sum(h[key] for h in history[-span:]) / span]
        for key in keys
    ]
    table = format_table(["loss", f"first {span} steps", f"last {span} steps"], rows, [None, ".4f", ".4f"])
    return f"{len(history)} steps in {seconds:.0f} s\n{table}\nwrote {output} and {curve}"
