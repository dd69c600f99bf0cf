"""The bad-input defects of issue 12 that are not plain refusals: what must work, warn or be replaced.

(The refusals themselves are rows of tests/test_cli_errors.py, run through the console script.)
"""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

import vggt_et
from vggt_et.model.loading import read_state_dict
from vggt_et.options import CompileOptions, QuantSettings
from vggt_et.pipeline.validation import validate
from vggt_et.utils.errors import UserError


def _run_cli(cli: list[str], *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*cli, *args], capture_output=True, text=True, timeout=600, cwd=cwd)


# 5: valid checkpoints in the old torch.save format and safetensors under any name load


@pytest.mark.parametrize("form", ["legacy-pt", "safetensors-named-bin", "zip-pt"])
def test_checkpoint_formats_load_bit_exact(tmp_path, tiny_model, form) -> None:
    state = {k: v.contiguous() for k, v in tiny_model.state_dict().items()}
    path = tmp_path / {"legacy-pt": "m.pt", "safetensors-named-bin": "m.bin", "zip-pt": "m.pth"}[form]
    if form == "safetensors-named-bin":
        save_file(state, str(path))
    else:
        torch.save(state, path, _use_new_zipfile_serialization=form == "zip-pt")
    loaded = vggt_et.load_model("tiny", str(path))
    for name, tensor in loaded.state_dict().items():
        assert torch.equal(tensor, tiny_model.state_dict()[name]), name


def test_legacy_pickle_with_objects_is_still_refused(tmp_path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"w": torch.zeros(1), "obj": Path("x")}, path, _use_new_zipfile_serialization=False)
    with pytest.raises(UserError, match="other than tensors"):
        read_state_dict(path)


# 6: 16-bit greyscale PNGs keep their tones


def test_16_bit_png_is_scaled_not_clipped(tmp_path) -> None:
    from vggt_et.data.preprocess import load_images_to_shape

    ramp = np.linspace(0, 65535, 56 * 70).reshape(56, 70).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "g16.png")
    Image.fromarray(np.round(ramp / 257).astype(np.uint8)).save(tmp_path / "g8.png")
    sixteen, _ = load_images_to_shape([tmp_path / "g16.png"], 56, 70)
    eight, _ = load_images_to_shape([tmp_path / "g8.png"], 56, 70)
    assert (sixteen >= 0.999).float().mean() < 0.05  # was 99.6 % white
    assert torch.allclose(sixteen, eight, atol=1 / 255)


# 8: a run replaces the outputs of the previous run into the same folder


def test_rerun_into_a_folder_leaves_no_stale_outputs(tmp_path, vggt_et_cli, tiny_points_pte, tiny_depth_pte):
    out = tmp_path / "out"
    first = _run_cli(vggt_et_cli, "run", str(tiny_points_pte), "-o", str(out), cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-1500:]
    assert (out / "points.ply").is_file() and (out / "world_points.npy").is_file()
    (out / "my_notes.txt").write_text("mine")  # a user's file added later is not ours to remove...
    second = _run_cli(vggt_et_cli, "run", str(tiny_depth_pte), "-o", str(out), cwd=tmp_path)
    assert second.returncode == 2 and "my_notes.txt" in second.stderr  # ...nor to mix our outputs with
    (out / "my_notes.txt").unlink()
    second = _run_cli(vggt_et_cli, "run", str(tiny_depth_pte), "-o", str(out), cwd=tmp_path)
    assert second.returncode == 0, second.stderr[-1500:]
    names = {p.name for p in out.iterdir()}
    assert not {"points.ply", "world_points.npy", "world_points_conf.npy", "pose_enc.npy"} & names, names
    assert {"depth.npy", "depth_00.png", "depth_01.png"} <= names


# 9: `--images a.jpg b.jpg` (the README form is run by tests/test_readme.py)


def test_images_list_keeps_its_order_and_stops_at_the_next_option() -> None:
    from vggt_et.cli import expand_variadic

    args = ["m.pte", "--images", "a", "b", "c", "-o", "out", "--images", "d"]
    assert expand_variadic(args, "--images") == [
        "m.pte", "--images", "a", "--images", "b", "--images", "c", "-o", "out", "--images", "d",
    ]  # fmt: skip
    assert expand_variadic(["m", "--images"], "--images") == ["m", "--images"]


# 12: a --keep-float pattern that matches nothing is named, with what it could have meant


def test_keep_float_pattern_matching_nothing_warns_with_near_names(tmp_path, caplog) -> None:
    options = CompileOptions(
        preset="tiny", random_weights=True, quant="int8", frames=2, height=28, width=42, outputs=("depth", "camera"),
        output=str(tmp_path / "m.pte"), quantization=QuantSettings(keep_float=("model.depth_hed.*", "model.camera_head.*")),
    )  # fmt: skip
    with caplog.at_level(logging.WARNING):
        validate(options)
    warnings = [r.getMessage() for r in caplog.records if "--keep-float" in r.getMessage()]
    assert len(warnings) == 1 and "'model.depth_hed.*'" in warnings[0]
    assert "model.depth_head." in warnings[0]


# 14: compare takes the preset from the program


def test_compare_defaults_the_preset_to_the_programs(tmp_path, vggt_et_cli, tiny_depth_pte) -> None:
    done = _run_cli(vggt_et_cli, "compare", str(tiny_depth_pte), "--random-weights", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-1500:]
    assert "depth" in done.stdout


def test_executorch_error_codes_are_named() -> None:
    from vggt_et.runtime.program import name_error_codes

    assert name_error_codes("Failed to load program, error: 0x:23") == (
        "Failed to load program, error: InvalidProgram (0x23)"
    )


def test_no_images_run_does_not_speak_of_calibration(tmp_path, vggt_et_cli, tiny_depth_pte) -> None:
    done = _run_cli(vggt_et_cli, "run", str(tiny_depth_pte), "-o", str(tmp_path / "o"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-1500:]
    assert "calibration" not in done.stderr and "synthetic scene" in done.stderr


# 15: the TFLite conversion's memory need is said before it starts


def test_tflite_conversion_refused_up_front_when_memory_is_short(tmp_path, monkeypatch) -> None:
    import vggt_et.utils.timing
    from vggt_et.pipeline.validation import check_tflite_memory

    options = CompileOptions(
        preset="vggt-1b", random_weights=True, backend="tflite", output=str(tmp_path / "m")
    )
    monkeypatch.setattr(vggt_et.utils.timing, "available_memory_bytes", lambda: 16 * 2**30)
    with pytest.raises(UserError, match=r"needs about 20\.0 GiB .* 16\.0 GiB is available"):
        check_tflite_memory(options, ["depth"])  # measured: 20.0 GiB for VGGT-1B depth-only
    monkeypatch.setattr(vggt_et.utils.timing, "available_memory_bytes", lambda: 64 * 2**30)
    check_tflite_memory(options, ["depth"])


_COMPILE_IMPORT_PROBE = """
import sys
from vggt_et.cli import main

codes = []
for args in {cases!r}:
    try:
        main(args)
    except SystemExit as stop:
        codes.append(stop.code)
print(repr((codes, sorted(m for m in sys.modules if m.split(".")[0] == "executorch" or m.startswith("vggt_et.passes")))))
"""


def test_bad_flags_are_refused_before_importing_the_compiler(tmp_path) -> None:
    """A typo is answered in about a second: ExecuTorch and the passes (seconds to import) are loaded only
    once every flag is good. Before, compile's checks lived in the compile driver, which imports both, and
    audit and demo imported them before their checks."""
    tiny = ["compile", "--preset", "tiny", "--random-weights", "-o", str(tmp_path / "m.pte")]
    cases = [
        [*tiny, "--frames", "0"],
        [*tiny, "--attention-budget", "3 parsecs"],
        [*tiny, "--quant", "int3"],
        [*tiny, "--backend", "qnn"],  # no QNN SDK here
        [*tiny, "--quant", "w4-fisher", "--fisher", str(tmp_path / "missing.pt")],
        [*tiny, "--keep-float", "re:(", "--quant", "int8"],
        [*tiny, "--int8-activations", "dynamic", "--quant", "w4"],
        ["compile", "--preset", "tiny", "--checkpoint", str(tmp_path / "none.safetensors"), "-o", "x.pte"],
        ["audit", "--preset", "tiny", "--random-weights", "--json", str(tmp_path / "nofolder" / "a.json")],
        ["audit", "--preset", "tiny", "--checkpoint", str(tmp_path / "none.pt")],
        ["demo", "-o", str(tmp_path / "m.pte"), "--checkpoint", "builtin:nothing"],
    ]
    probe = _COMPILE_IMPORT_PROBE.format(cases=cases)
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr[-2000:]
    codes, compiler_modules = eval(done.stdout.strip().splitlines()[-1])  # noqa: S307 (our own probe's repr)
    assert codes == [2] * len(cases), done.stderr
    assert compiler_modules == [], compiler_modules
    assert not list(tmp_path.glob("*.pte"))
