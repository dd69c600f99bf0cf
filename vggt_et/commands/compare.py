"""`vggt-et compare`: a compiled program against our eager model (and ground truth when the scene has it)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import numpy as np
import torch

from vggt_et.outputs.inference import ProgramInfo, program_info, run_program
from vggt_et.outputs.scoring import ground_truth_metrics
from vggt_et.utils.errors import UserError


def eager_outputs(model: torch.nn.Module, info: ProgramInfo, images: np.ndarray) -> dict[str, np.ndarray]:
    """Our eager model through the same wrapper the program was exported from."""
    from vggt_et.options import OUTPUT_GROUPS
    from vggt_et.pipeline.export import VGGTProgram

    groups = tuple(n for n, g in OUTPUT_GROUPS.items() if set(g.tensors) <= set(info.outputs))
    program = VGGTProgram(model, groups).eval()
    with torch.no_grad():
        arrays = program(torch.from_numpy(images))
    return {name: a.numpy() for name, a in zip(info.outputs, arrays, strict=True)}


def scene_inputs(info: ProgramInfo, calib_data: str | None, seed: int) -> tuple[np.ndarray, dict | None, str]:
    """Images [1, S, 3, H, W] plus ground truth from a BlendedMVS-layout folder or a synthetic scene."""
    from vggt_et.data.calibration import calibration_groups

    group = calibration_groups(
        calib_data,
        info.frames,
        info.height,
        info.width,
        n_groups=1,
        seed=seed,
        with_depth=True,
        announce=False,
    )[0]
    truth = None
    if group.depths is not None:
        truth = {
            "depth": group.depths.numpy(),
            "extrinsics": group.extrinsics.numpy(),
            "intrinsics": group.intrinsics.numpy(),
        }
    source = calib_data or "synthetic scene"
    return group.images.unsqueeze(0).numpy().astype(np.float32), truth, source


def compare(
    pte: str | Path,
    model: torch.nn.Module,
    *,
    against: str = "eager",
    calib_data: str | None = None,
    seed: int = 0,
    frames: int | None = None,
) -> dict[str, Any]:
    """The compare report: per output rel_l2 / max_abs (/ abs_rel, delta1 for depth) vs the reference, on a
    scene of `frames` frames (default: the program's largest count)."""
    from vggt_et.runtime.metrics import tensor_metrics

    info = program_info(pte)
    info = info.with_frames(frames or info.frames)
    images, truth, source = scene_inputs(info, calib_data, seed)
    ours = run_program(pte, images)
    if against == "eager":
        reference = eager_outputs(model, info, images)
    else:
        from vggt_et.pipeline.tflite import run_tflite

        reference = dict(zip(info.outputs, run_tflite(against, images), strict=True))
    report: dict[str, Any] = {
        "against": against,
        "program": str(pte),
        "inputs": source,
        "outputs": {
            name: tensor_metrics(ours[name], reference[name], is_depth=(name == "depth"))
            for name in info.outputs
        },
    }
    if truth is not None:
        report["ground_truth"] = {
            "program": ground_truth_metrics(ours, truth),
            against: ground_truth_metrics(reference, truth),
        }
    return report


TFLITE_IDENTIFIER = b"TFL3"  # the flatbuffer file identifier of a LiteRT model, at bytes 4..8


def check_tflite_reference(path: str) -> None:
    """--against FILE must be a LiteRT (.tflite) model; checked before anything runs."""
    from vggt_et.utils import checks

    checks.input_file(path, "--against", ".tflite file (or pass --against eager)")
    with open(path, "rb") as handle:
        header = handle.read(8)
    if header[4:8] != TFLITE_IDENTIFIER:
        raise UserError(
            f"--against {path} is not a LiteRT model (no TFL3 identifier); pass a .tflite file from "
            "`vggt-et compile --backend tflite`, or --against eager"
        )


def check_shape_matches(info: ProgramInfo, preset: str) -> None:
    if info.preset != preset:
        raise UserError(
            f"the program was compiled from preset {info.preset!r}, not {preset!r}; pass --preset {info.preset}"
        )


def compare_command(
    model: str,
    preset: str | None,
    checkpoint: str | None,
    random_weights: bool,
    seed: int,
    against: str,
    calib_data: str | None,
    json_path: str | None,
    frames: int | None,
) -> None:
    """Checks, runs both sides, prints the tables (and ground truth when the scene has it), writes JSON."""
    from vggt_et.model.loading import check_model_source, load_model
    from vggt_et.outputs.inference import program_info
    from vggt_et.utils import checks
    from vggt_et.utils.files import write_json
    from vggt_et.utils.tables import format_table

    checks.input_file(model, "MODEL", ".pte program")
    if against != "eager":
        check_tflite_reference(against)
        if checkpoint is not None or random_weights:
            raise UserError(
                f"--against {against} compares with a .tflite file: drop --checkpoint/--random-weights"
            )
    if calib_data is not None:
        checks.input_folder(calib_data, "--calib-data", "BlendedMVS-layout folder")
    if json_path:
        checks.output_file(json_path, "--json")
        checks.distinct_paths(
            {"--json": json_path},
            {
                "MODEL": model,
                "--checkpoint": checkpoint,
                "--against": None if against == "eager" else against,
            },
        )
    info = program_info(model)
    info.with_frames(frames or info.frames)  # refuses a count the program lacks before loading the model
    preset = preset or info.preset
    check_shape_matches(info, preset)
    if against == "eager":
        check_model_source(preset, checkpoint, random_weights)
    eager = (
        load_model(preset, checkpoint, random_weights=random_weights, seed=seed)
        if against == "eager"
        else None
    )
    report = compare(model, eager, against=against, calib_data=calib_data, seed=seed, frames=frames)
    rows = [
        (name, m["rel_l2"], m["max_abs"], m.get("abs_rel", ""), m.get("delta1", ""))
        for name, m in report["outputs"].items()
    ]
    click.echo(f"{model} vs {against} on {report['inputs']}")
    click.echo(format_table(["output", "rel_l2", "max_abs", "abs_rel", "delta1"], rows))
    if "ground_truth" in report:
        keys = ["abs_rel", "delta1", "rot_err_deg", "trans_err_deg", "auc30"]
        gt = [(who, *(m.get(k, "") for k in keys)) for who, m in report["ground_truth"].items()]
        click.echo("\nagainst ground truth (depth median-scaled per frame; cameras as relative poses)")
        click.echo(format_table(["model", *keys], gt))
    if json_path:
        write_json(json_path, report)
