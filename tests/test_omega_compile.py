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


def test_omega_rotation_leaves_fp32_outputs_unchanged() -> None:
    """The residual rotation folds into VGGT-Ω's frame and inter-frame blocks (RoPE and the QK norms act on
    q and k after qkv, the register-attention layers run the same blocks on fewer tokens) and its heads."""
    import copy

    import torch

    from vggt_et.fgq.rotation import rotate_vggt
    from vggt_et.quantizers.rotation import DelegableRotatedLayerNorm, StreamRotation

    model = vggt_et.load_model(PRESET, random_weights=True).eval()
    rotated = copy.deepcopy(model)
    report = rotate_vggt(rotated)
    images = torch.rand(1, 2, 3, SHAPE["height"], SHAPE["width"], generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        reference, output = model(images), rotated(images)
    for key in ("depth", "depth_conf", "pose_enc"):
        rel = float((output[key] - reference[key]).norm() / reference[key].norm())
        assert rel <= 1e-5, (key, rel)
    blocks = 2 * len(model.aggregator.frame_blocks)
    assert len(report.norms_rewritten) == 2 * blocks + 1  # two per block and the dense head's
    assert sum(isinstance(m, DelegableRotatedLayerNorm) for m in rotated.modules()) == 2 * blocks + 1
    assert sum(isinstance(m, StreamRotation) for m in rotated.modules()) == 2  # DINOv3 entry, camera exit


def test_omega_w4_fisher_fisher_file_and_program(tmp_path) -> None:
    """`vggt-et fisher` on VGGT-Ω takes its tasks from the preset (camera, depth: no points); the
    w4-fisher program built from that file is one delegate and stays close to eager."""
    from click.testing import CliRunner

    from vggt_et.cli import main
    from vggt_et.options import W4FisherFlags
    from vggt_et.quantizers.fisher import FisherStats

    fisher = str(tmp_path / "fisher.pt")
    shape_args = ["--frames", "2", "--height", str(SHAPE["height"]), "--width", str(SHAPE["width"])]
    args = [
        "fisher",
        "--preset",
        PRESET,
        "--random-weights",
        *shape_args,
        "--calib-samples",
        "1",
        "-o",
        fisher,
    ]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    stats = FisherStats.load(fisher)
    depth = len(vggt_et.load_model(PRESET, random_weights=True).aggregator.frame_blocks)
    assert stats.task_names == ["camera", "depth"]
    assert stats.block_names == [f"{kind}_{i}" for i in range(depth) for kind in ("frame", "inter_frame")]
    assert bool((stats.raw.sum(dim=2) > 0).all())  # every task depends on every block

    out = tmp_path / "omega_w4f.pte"
    options = CompileOptions(
        preset=PRESET,
        random_weights=True,
        quant="w4-fisher",
        calib_samples=1,
        outputs=("depth", "camera"),
        output=str(out),
        w4_fisher=W4FisherFlags(fisher=fisher),
        **SHAPE,
    )
    report = compile_model(options, quiet=True)
    assert report["delegate_segments"] == 1 and report["w4_fisher"]["notes"] == []
    assert report["delegated_fraction"] == 1.0 and report["non_delegated"] == {}
    assert report["w4_fisher"]["fisher"]["tasks"] == ["depth", "camera"]
    result = compare(str(out), vggt_et.load_model(PRESET, random_weights=True))
    # Random weights: depth stays close; the camera's 9 numbers move more at 4 bits (as on VGGT tiny).
    bounds = {"depth": 0.05, "depth_conf": 0.05, "pose_enc": 0.5}
    for name, metrics in result["outputs"].items():
        assert metrics["rel_l2"] <= bounds[name], (name, metrics)
