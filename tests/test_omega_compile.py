"""`vggt-omega-tiny` through the whole pipeline: XNNPACK fp32 program, one delegate, matching eager."""

from __future__ import annotations

import pytest

import vggt_et
from vggt_et.commands.compare import compare
from vggt_et.options import CompileOptions
from vggt_et.outputs.inference import program_info
from vggt_et.pipeline.compile import compile_model

PRESET = "vggt-omega-tiny"
SHAPE = {"frames": 2, "height": 32, "width": 48}  # multiples of 16, not square


@pytest.fixture(scope="module")
def fp32_program(tmp_path_factory) -> tuple[str, dict]:
    out = tmp_path_factory.mktemp("omega") / "omega_fp32.pte"
    options = CompileOptions(
        preset=PRESET,
        random_weights=True,
        output=str(out),
        report=str(out) + ".json",
        outputs=("depth", "camera"),
        **SHAPE,
    )
    return str(out), compile_model(options, quiet=True)


def test_omega_xnnpack_fp32_is_one_delegate_and_matches_eager(fp32_program) -> None:
    """Before the pixel-shuffle pass this program had 2 segments with 2 clones left outside."""
    path, report = fp32_program
    assert report["delegate_segments"] == 1 and report["non_delegated"] == {}, report["non_delegated"]
    assert report["delegated_fraction"] == 1.0
    info = program_info(path)
    assert info.outputs == ("depth", "depth_conf", "pose_enc")
    assert info.input_shape == (1, 2, 3, 32, 48)
    result = compare(path, vggt_et.load_model(PRESET, random_weights=True))
    for name, metrics in result["outputs"].items():
        assert metrics["rel_l2"] <= 1e-5, (name, metrics)


@pytest.mark.parametrize("quant", ["int8", "w4"])
def test_omega_quantized_programs_load_run_and_stay_close(quant, tmp_path) -> None:
    """w4 used to compile and then be refused by XNNPACK at load: the int8 convs of the DPT fusion units
    feed a quantized ReLU and a float residual add through one shared dequantize node."""
    out = tmp_path / f"omega_{quant}.pte"
    options = CompileOptions(
        preset=PRESET, random_weights=True, quant=quant, calib_samples=1, output=str(out), **SHAPE
    )
    report = compile_model(options, quiet=True)
    assert report["delegate_segments"] == 1
    result = compare(str(out), vggt_et.load_model(PRESET, random_weights=True))
    for name, metrics in result["outputs"].items():
        assert metrics["rel_l2"] <= 0.05, (name, metrics)
