"""`vggt-et fisher`: FGQ's Fisher statistics of a VGGT model, saved for `compile --quant w4-fisher`."""

from __future__ import annotations

import logging
import math

from vggt_et.fgq.rotation import rotate_vggt
from vggt_et.fgq.tasks import (
    compute_vggt_fisher,
    default_tasks,
    fisher_metadata,
    heatmap_path,
    parse_tasks,
    sensitivity_rows,
    task_heads,
    weights_description,
)
from vggt_et.options import ProgramShape
from vggt_et.quantizers.fisher import FisherStats, plot_fisher_heatmap
from vggt_et.utils.errors import UserError

logger = logging.getLogger(__name__)


def fisher_command(
    *,
    preset: str,
    checkpoint: str | None,
    random_weights: bool,
    seed: int,
    frames: int,
    height: int,
    width: int,
    tasks: str | None,
    calib_data: str | None,
    calib_samples: int,
    no_rotation: bool,
    output: str,
    keep_activations: bool = False,
) -> tuple[FisherStats, str]:
    """`vggt-et fisher`: statistics file, heat map PNG beside it; returns the stats and a summary table."""
    from vggt_et.data.calibration import calibration_samples, check_calibration_data
    from vggt_et.model.loading import check_model_source, load_model
    from vggt_et.model.presets import get_preset
    from vggt_et.utils import checks
    from vggt_et.utils.tables import format_table

    config = get_preset(preset)
    shape = ProgramShape(frames, height, width, config.patch_size)
    chosen = parse_tasks(tasks) if tasks else default_tasks(config.HEADS)
    check_model_source(preset, checkpoint, random_weights, task_heads(chosen))
    if not math.log2(config.embed_dim).is_integer() and not no_rotation:
        raise UserError(
            f"the rotation needs a power-of-two width, {preset} has {config.embed_dim}; pass --no-rotation"
        )
    checks.output_file(output, "-o")
    checks.output_file(heatmap_path(output), "the heat map (beside -o)")
    checks.distinct_paths(
        {"-o": output, "the heat map (beside -o)": heatmap_path(output)}, {"--checkpoint": checkpoint}
    )
    check_calibration_data(calib_data, calib_samples)
    samples = calibration_samples(calib_data, shape, calib_samples, seed=seed)
    model = load_model(
        preset, checkpoint, random_weights=random_weights, seed=seed, heads=task_heads(chosen)
    ).eval()
    if not no_rotation:
        logger.info("folding the residual rotation")
        rotate_vggt(model)
    metadata = fisher_metadata(
        preset,
        shape,
        len(samples),
        chosen,
        rotated=not no_rotation,
        weights=weights_description(checkpoint, random_weights, seed),
        calib_data=calib_data,
    )
    stats = compute_vggt_fisher(model, samples, chosen, metadata, recompute_blocks=not keep_activations)
    stats.save(output)
    png = heatmap_path(output)
    plot_fisher_heatmap(stats, png)
    table = format_table(["block", "importance", *chosen], sensitivity_rows(stats))
    shape_text = f"{shape.frames}x{shape.height}x{shape.width}"
    summary = (
        f"Fisher [{len(chosen)} tasks, {len(stats.block_names)} blocks, {stats.raw.shape[2]} channels] of "
        f"{preset} at {shape_text} over {len(samples)} samples\nmost sensitive blocks (importance: mean 1; "
        f"tasks: mean per-task-normalised Fisher)\n{table}\nwrote {output} and {png}"
    )
    return stats, summary
