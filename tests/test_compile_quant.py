"""Quantized `tiny` programs: INT8 (XNNPACK, calibrated on synthetic scenes), W4, and QNN INT8 without the SDK."""

from __future__ import annotations

import pytest
import torch

import vggt_et
from vggt_et.commands.compare import compare
from vggt_et.options import CompileOptions, QuantSettings
from vggt_et.outputs.inference import program_info
from vggt_et.pipeline.compile import compile_model

SHAPE = {"frames": 2, "height": 28, "width": 42}


def _compile(tmp_path_factory, name: str, **kw) -> tuple[str, dict]:
    out = tmp_path_factory.mktemp(name) / f"{name}.pte"
    options = CompileOptions(preset="tiny", random_weights=True, output=str(out), **SHAPE, **kw)
    return str(out), compile_model(options, quiet=True)


@pytest.fixture(scope="module")
def eager():
    return vggt_et.load_model("tiny", random_weights=True)


def test_xnnpack_int8_calibrated_on_synthetic_scenes(tmp_path_factory, eager) -> None:
    path, report = _compile(
        tmp_path_factory, "int8", quant="int8", calib_samples=2, outputs=("depth", "points", "camera")
    )
    quant = report["quantization"]
    assert quant["recipe"] == "xnnpack-int8" and quant["calibration_samples"] == 2
    assert quant["calibration_data"] == "synthetic scenes"
    assert "model.aggregator.patch_embed.patch_embed.proj" in quant["float_layers"]
    assert len(quant["quantized_layers"]) > 30
    # A scene the calibration did not see. (Camera outputs are not checked here: with random weights the
    # camera token is initialised at 1e-6, far below the activation ranges of the patch tokens.)
    result = compare(path, eager, seed=5)
    for name in ("depth", "world_points"):
        assert result["outputs"][name]["rel_l2"] <= 0.05, (name, result["outputs"][name])
    # One segment with the camera head too: its trunk runs 4 iterations over the same layers, which PT2E
    # quantized at the first call only (the pose embedding then stayed outside XNNPACK as a float addmm);
    # layers called more than once now stay float, with a note.
    assert any("called more than once stay float" in note for note in quant["notes"]), quant["notes"]
    assert report["delegate_segments"] == 1 and report["delegated_fraction"] == 1.0, report["non_delegated"]

    from vggt_et.runtime.bench import run_bench
    from vggt_et.runtime.runner_build import build_runner

    bench = run_bench(path, runner=build_runner("host"), iters=1, echo=lambda _: None)
    # The C++ runner (with its XNNPACK weight cache) gives the Python runtime's int8 outputs, pose_enc
    # included: with the trunk's first calls int8 and the later ones float, the cache served one packed
    # layer for both and pose_enc differed by 0.1 rel. L2.
    assert len(bench["check"]["outputs"]) == len(program_info(path).outputs) == 5
    assert max(o["rel_l2"] for o in bench["check"]["outputs"]) <= 1e-6, bench["check"]


def test_xnnpack_w4_compiles_and_runs(tmp_path_factory, eager) -> None:
    path, report = _compile(tmp_path_factory, "w4", quant="w4", outputs=("depth",))
    assert report["quantization"]["recipe"] == "xnnpack-8da4w"
    result = compare(path, eager)
    assert (
        result["outputs"]["depth"]["rel_l2"] < 0.5
    )  # runs and tracks fp32; accuracy is benchmarked, not here
    quant = report["quantization"]
    # The DPT head's 2-D convolutions get static int8, all inside XNNPACK; only its last 1x1 conv is float.
    assert "model.depth_head.scratch.layer1_rn" in quant["quantized_layers"]
    assert "model.depth_head.scratch.refinenet1.resConfUnit1.conv1" in quant["quantized_layers"]
    assert "model.depth_head.scratch.output_conv2.0" in quant["quantized_layers"]
    assert "model.depth_head.scratch.output_conv2.2" in quant["float_layers"]
    assert report["delegated_fraction"] == 1.0 and report["delegate_segments"] == 1
    weights = report["weight_bytes"]
    assert report["pte_bytes"] < 0.45 * weights  # tiny keeps norms and small tensors in fp32


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"quant": "w4", "quantization": QuantSettings(w4_group_size=48)}, "multiple of 32"),
        (
            {"quant": "int8", "quantization": QuantSettings(w4_group_size=64)},
            "applies to --quant w4/w4-fisher",
        ),
        ({"quant": "fp32", "quantization": QuantSettings(keep_float=("model.*",))}, "--keep-float applies"),
        (
            {"quant": "int8", "quantization": QuantSettings(keep_float=("re:(",))},
            "not a valid regular expression",
        ),
        (
            {"quant": "w4", "quantization": QuantSettings(int8_activations="dynamic")},
            "--int8-activations applies",
        ),
        (
            {"quant": "int8", "backend": "qnn", "quantization": QuantSettings(int8_activations="dynamic")},
            "QNN runs static",
        ),
    ],
)
def test_quant_flags_checked_before_work(tmp_path, kw, message, monkeypatch) -> None:
    monkeypatch.setenv("QNN_SDK_ROOT", str(tmp_path))  # past the SDK check, to the flag check
    from vggt_et.utils.errors import UserError

    options = CompileOptions(preset="tiny", random_weights=True, output=str(tmp_path / "x.pte"), **kw)
    with pytest.raises(UserError, match=message):
        compile_model(options, quiet=True)
    assert not list(tmp_path.iterdir())


def test_int8_dynamic_with_everything_quantized_runs(tmp_path_factory, eager) -> None:
    """`--int8-activations dynamic --keep-float none`: per-token linears, static convs, patch embed too."""
    path, report = _compile(
        tmp_path_factory,
        "int8_dynamic",
        quant="int8",
        calib_samples=1,
        quantization=QuantSettings(int8_activations="dynamic", keep_float=("none",)),
    )
    quant = report["quantization"]
    assert quant["options"]["dynamic"] is True
    # Only the DPT's two transposed convs stay float: dynamic mode gives static int8 to 2-D convs only.
    assert quant["float_layers"] == ["model.depth_head.resize_layers.0", "model.depth_head.resize_layers.1"]
    assert "model.aggregator.patch_embed.patch_embed.proj" in quant["quantized_layers"]
    assert "model.depth_head.scratch.output_conv2.2" in quant["quantized_layers"]
    assert report["delegated_fraction"] == 1.0
    assert compare(path, eager, seed=5)["outputs"]["depth"]["rel_l2"] <= 0.05


@pytest.mark.parametrize(("quant", "recipe"), [("int8", "qnn-8a8w"), ("w4", "qnn-16a4w")])
def test_qnn_graph_annotated_and_converted_without_sdk(tmp_path_factory, monkeypatch, quant, recipe) -> None:
    monkeypatch.delenv("QNN_SDK_ROOT", raising=False)
    path, report = _compile(
        tmp_path_factory,
        f"qnn_{quant}",
        backend="qnn",
        quant=quant,
        calib_samples=1,
        stop_before_lowering=True,
    )
    assert report["quantization"]["recipe"] == recipe
    program = torch.export.load(path)
    targets = [str(n.target) for n in program.graph.nodes if n.op == "call_function"]
    assert sum("quantize_per_tensor" in t for t in targets) > 20
    assert sum("dequantize_per_channel" in t for t in targets) > 10  # per-channel int8 weights
