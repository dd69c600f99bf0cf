"""Quantization recipes on a toy ViT: lowering, running, size and accuracy; keep-float; QNN without SDK."""

from __future__ import annotations

import os
from collections import Counter

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vggt_et.quantizers.calibration import (
    CalibrationError,
    calibrate,
    check_observers_saw_data,
    count_observers,
    observers_without_data,
)
from vggt_et.quantizers.float_layers import InvalidLayerPatternError, compile_patterns
from vggt_et.quantizers.recipes import (
    NothingQuantizedError,
    UnknownOptionError,
    UnsupportedRecipeError,
    list_recipes,
    quantize_program,
    recipe_for,
)
from vggt_et.runtime.bench import run_bench

torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))

DIM, HEADS, PATCH, IMAGE = 96, 4, 4, 32
LINEARS = [f"blocks.{b}.{name}" for b in range(2) for name in ("qkv", "proj", "fc1", "fc2")] + ["head"]


class ToyBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(DIM)
        self.qkv = nn.Linear(DIM, 3 * DIM)
        self.proj = nn.Linear(DIM, DIM)
        self.norm2 = nn.LayerNorm(DIM)
        self.fc1 = nn.Linear(DIM, 4 * DIM)
        self.fc2 = nn.Linear(4 * DIM, DIM)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(self.norm1(x)).reshape(b, n, 3, HEADS, c // HEADS).permute(2, 0, 3, 1, 4)
        attention = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        x = x + self.proj(attention.transpose(1, 2).reshape(b, n, c))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class ToyViT(nn.Module):
    """Patch conv → 2 pre-norm ViT blocks (SDPA attention) → linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, DIM, PATCH, PATCH)
        self.blocks = nn.ModuleList([ToyBlock(), ToyBlock()])
        self.head = nn.Linear(DIM, 16)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.patch(images).flatten(2).transpose(1, 2)
        for block in self.blocks:
            x = block(x)
        return self.head(x)


def _images(seed: int) -> torch.Tensor:
    return torch.rand(1, 3, IMAGE, IMAGE, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def toy():
    torch.manual_seed(0)
    model = ToyViT().eval()
    example = _images(0)
    program = torch.export.export(model, (example,))
    test_input = _images(1000)  # not among the calibration samples, same distribution
    with torch.no_grad():
        reference = model(test_input)
    calibration = [(_images(seed),) for seed in range(1, 9)]
    # The fp32 .pte holds every weight as fp32 plus a little program overhead, so the weight bytes are a
    # (strict) stand-in for its size that saves a lowering.
    fp32_weight_bytes = sum(p.numel() * 4 for p in model.parameters())
    return {
        "program": program,
        "calibration": calibration,
        "input": test_input,
        "ref": reference,
        "fp32": fp32_weight_bytes,
    }


def _lower_and_run(program, images: torch.Tensor, save_to=None) -> tuple[int, torch.Tensor, Counter]:
    """Lower with XNNPACK, run with the ExecuTorch runtime: (.pte bytes, output, ops left outside delegates);
    the program is also written to `save_to` when given."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower
    from executorch.extension.pybindings.portable_lib import _load_for_executorch_from_buffer

    edge = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])
    outside = Counter(
        n.target.__name__
        for n in edge.exported_program().graph.nodes
        if n.op == "call_function" and "getitem" not in str(n.target) and "call_delegate" not in str(n.target)
    )
    buffer = edge.to_executorch().buffer
    if save_to is not None:
        save_to.write_bytes(buffer)
    output = _load_for_executorch_from_buffer(buffer).forward((images,))[0]
    return len(buffer), output, outside


def _rel_l2(output: torch.Tensor, reference: torch.Tensor) -> float:
    return float((output - reference).norm() / reference.norm())


def _nodes(program, target_substring: str) -> list[torch.fx.Node]:
    return [n for n in program.graph.nodes if n.op == "call_function" and target_substring in str(n.target)]


def _linear_or_conv(program, path: str) -> torch.fx.Node:
    for node in program.graph.nodes:
        stack = node.meta.get("nn_module_stack") or {}
        if (
            stack
            and list(stack.values())[-1][0] == path
            and ("linear" in str(node.target) or "conv" in str(node.target))
        ):
            return node
    raise AssertionError(f"no linear/conv node for {path}")


def _touches_qdq(node: torch.fx.Node) -> bool:
    """True when any input comes from a dequantize or any user is a quantize op."""
    inputs = [a for a in node.args if isinstance(a, torch.fx.Node)]
    return any("dequantize" in str(a.target) for a in inputs) or any(
        "quantize" in str(u.target) and "dequantize" not in str(u.target) for u in node.users
    )


# --- XNNPACK -------------------------------------------------------------------------------------------


def test_xnnpack_int8_lowers_runs_small_and_close_to_fp32(toy):
    result = quantize_program(toy["program"], "xnnpack-int8", toy["calibration"], progress=False)
    assert result.quantized_layers == ["patch", *LINEARS]
    assert result.float_layers == []
    assert result.calibration_samples == len(toy["calibration"])

    size, output, outside = _lower_and_run(result.program, toy["input"])
    assert size < 0.35 * toy["fp32"], (size, toy["fp32"])
    assert _rel_l2(output, toy["ref"]) < 0.05
    # XNNPACK took every quantized op: nothing quantized or weighted runs outside a delegate.
    assert not [op for op in outside if "quantize" in op or "linear" in op or "convolution" in op], outside


def test_xnnpack_int8_dynamic_linears_with_static_convs(toy):
    # Without samples the conv's ranges come from the example inputs, and the result says so.
    result = quantize_program(toy["program"], "xnnpack-int8", None, progress=False, dynamic=True)
    assert result.quantized_layers == ["patch", *LINEARS]
    assert len(_nodes(result.program, "choose_qparams")) == len(LINEARS)  # per-token scales at run time
    assert _touches_qdq(_linear_or_conv(result.program, "patch"))  # the conv: static int8
    assert result.calibration_samples == 0 and any("example inputs" in n for n in result.notes)
    calibrated = quantize_program(
        toy["program"], "xnnpack-int8", toy["calibration"], progress=False, dynamic=True
    )
    assert calibrated.calibration_samples == len(toy["calibration"])
    size, output, outside = _lower_and_run(result.program, toy["input"])
    assert size < 0.35 * toy["fp32"]
    assert _rel_l2(output, toy["ref"]) < 0.05
    assert not [op for op in outside if "quantize" in op or "linear" in op], outside


def test_xnnpack_8da4w_lowers_runs_quarter_size(toy):
    result = quantize_program(
        toy["program"], "xnnpack-8da4w", toy["calibration"], progress=False, group_size=32
    )
    # int4 linears, and the conv gets static int8 (calibrated) instead of staying fp32.
    assert result.quantized_layers == ["patch", *LINEARS]
    assert result.float_layers == [] and result.calibration_samples == len(toy["calibration"])
    assert _touches_qdq(_linear_or_conv(result.program, "patch"))
    size, output, outside = _lower_and_run(result.program, toy["input"])
    assert size < 0.25 * toy["fp32"], (size, toy["fp32"])
    assert _rel_l2(output, toy["ref"]) < 0.25  # int4 random weights: coarse, but far from broken (≈1)
    assert not [op for op in outside if "quantize" in op or "linear" in op or "choose_qparams" in op], outside


def test_keep_float_leaves_named_layers_without_qdq(toy):
    keep = ["patch", "re:blocks\\.1\\.fc[12]"]
    result = quantize_program(
        toy["program"], "xnnpack-int8", toy["calibration"], keep_float=keep, progress=False, observer="minmax"
    )
    assert result.options["observer"] == "minmax"
    assert result.float_layers == ["patch", "blocks.1.fc1", "blocks.1.fc2"]
    assert "blocks.1.fc1" not in result.quantized_layers and "blocks.0.fc1" in result.quantized_layers
    for path in ("patch", "blocks.1.fc1", "blocks.1.fc2"):
        assert not _touches_qdq(_linear_or_conv(result.program, path)), path
    for path in ("blocks.0.fc1", "blocks.1.qkv", "head"):
        assert _touches_qdq(_linear_or_conv(result.program, path)), path
    # Float islands inside a quantized graph still lower and run (the residual add takes a float input).
    _, output, _ = _lower_and_run(result.program, toy["input"])
    assert _rel_l2(output, toy["ref"]) < 0.05


def test_keep_float_for_8da4w_keeps_plain_weights(toy):
    result = quantize_program(
        toy["program"], "xnnpack-8da4w", keep_float=["head", "blocks.0.*"], progress=False
    )
    assert result.float_layers == ["blocks.0.qkv", "blocks.0.proj", "blocks.0.fc1", "blocks.0.fc2", "head"]
    assert result.quantized_layers == ["patch", *LINEARS[4:8]]
    assert len(_nodes(result.program, "choose_qparams_affine")) == 4
    assert not _touches_qdq(_linear_or_conv(result.program, "head"))


# --- QNN (no SDK) ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("recipe", "act_dtype", "act_range", "weight_range"),
    [
        ("qnn-8a8w", torch.uint8, (0, 255), (-127, 127)),
        # torch has no uint16 quantize kernels: QNN's 16-bit activations travel as int32 in [0, 65535].
        ("qnn-16a4w", torch.int32, (0, 65535), (-7, 7)),
    ],
)
def test_qnn_annotates_and_converts_without_sdk(toy, recipe, act_dtype, act_range, weight_range):
    result = quantize_program(
        toy["program"], recipe, toy["calibration"][:4], keep_float=["head"], progress=False
    )
    assert result.quantized_layers == ["patch", *LINEARS[:-1]]
    assert result.float_layers == ["head"]
    program = result.program
    for path in result.quantized_layers:
        node = _linear_or_conv(program, path)
        activation, weight = node.args[0], node.args[1]
        assert "dequantize_per_channel" in str(weight.target), path
        assert tuple(weight.args[4:6]) == weight_range and weight.args[6] == torch.int8, path
        assert "dequantize_per_tensor" in str(activation.target), path
        assert tuple(activation.args[3:5]) == act_range and activation.args[5] == act_dtype, path
    assert not _touches_qdq(_linear_or_conv(program, "head"))  # kept float: no q/dq on any side
    assert any("SDK" in note for note in result.notes)


def test_qnn_16a4w_block_uses_per_block_weights(toy, monkeypatch):
    from executorch.backends.qualcomm.utils import qnn_sdk_setup

    downloads = []
    monkeypatch.delenv("QNN_SDK_ROOT", raising=False)
    monkeypatch.setattr(qnn_sdk_setup, "_install_qnn_sdk", lambda: downloads.append(1) or False)
    result = quantize_program(
        toy["program"], "qnn-16a4w_block", toy["calibration"][:2], progress=False, block_size=32
    )
    for path in LINEARS:
        weight = _linear_or_conv(result.program, path).args[1]
        assert "dequantize_affine" in str(weight.target), path
        assert tuple(weight.args[1]) == (1, 32), path  # block size over the input dimension
    assert "per-block weights on 9 of 10" in " ".join(result.notes)
    assert downloads == []  # building the QnnQuantizer never tried to fetch the SDK


# --- calibration ----------------------------------------------------------------------------------------


def test_calibration_without_samples_fails_clearly(toy):
    with pytest.raises(CalibrationError, match="no samples"):
        quantize_program(toy["program"], "xnnpack-int8", [], progress=False)
    with pytest.raises(CalibrationError, match="needs calibration samples"):
        quantize_program(toy["program"], "qnn-8a8w", None, progress=False)
    with pytest.raises(CalibrationError, match="tuple of tensors"):
        calibrate(nn.Identity(), [("not a tensor",)], progress=False, check=False)


def test_observer_checks_catch_an_uncalibrated_module(toy):
    from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e

    from vggt_et.quantizers.pt2e_recipes import xnnpack_quantizer

    prepared = prepare_pt2e(
        toy["program"].module(), xnnpack_quantizer(dynamic=False, per_channel=True, keep_float=None)
    )
    assert count_observers(prepared) > 20
    assert len(observers_without_data(prepared)) == count_observers(prepared)
    with pytest.raises(CalibrationError, match="saw no data"):
        check_observers_saw_data(prepared)
    stats = calibrate(prepared, (sample for sample in toy["calibration"][:2]), progress=False)  # no len()
    assert stats.samples == 2 and stats.observers == count_observers(prepared)
    # Every observer ran once per sample (an observer shared by several edges runs once per edge).
    assert all(calls >= 2 and calls % 2 == 0 for calls in stats.observer_calls.values())
    assert observers_without_data(prepared, stats.observer_calls) == []


# --- registry and inputs --------------------------------------------------------------------------------


def test_registry_maps_backend_and_scheme():
    assert set(list_recipes()) == {
        "xnnpack-int8",
        "xnnpack-8da4w",
        "qnn-8a8w",
        "qnn-16a8w",
        "qnn-16a4w",
        "qnn-16a4w_block",
    }
    assert recipe_for("xnnpack", "int8") == "xnnpack-int8"
    assert recipe_for("XNNPACK", "w4") == "xnnpack-8da4w"
    assert recipe_for("qnn", "int8") == "qnn-8a8w"
    assert recipe_for("qnn", "w4") == "qnn-16a4w"
    assert recipe_for("qnn", "16a4w_block") == "qnn-16a4w_block"
    with pytest.raises(UnsupportedRecipeError, match="xnnpack schemes are: int8, w4"):
        recipe_for("xnnpack", "16a4w")
    with pytest.raises(UnsupportedRecipeError, match="skip quantization"):
        recipe_for("qnn", "fp32")
    with pytest.raises(UnsupportedRecipeError, match="quantized backends are: qnn, xnnpack"):
        recipe_for("tflite", "int8")


def test_bad_requests_fail_with_one_line_errors(toy):
    program = toy["program"]
    with pytest.raises(UnsupportedRecipeError, match="use one of: xnnpack-int8"):
        quantize_program(program, "int4-magic", toy["calibration"])
    with pytest.raises(UnknownOptionError, match="group_size"):
        quantize_program(program, "xnnpack-int8", toy["calibration"], group_size=32)
    with pytest.raises(InvalidLayerPatternError, match="regular expression"):
        quantize_program(program, "xnnpack-8da4w", keep_float=["re:blocks.(["], progress=False)
    with pytest.raises(NothingQuantizedError, match="keep_float"):
        quantize_program(program, "xnnpack-8da4w", keep_float=["*"], progress=False)
    with pytest.raises(ValueError, match="unknown activation observer"):
        quantize_program(program, "xnnpack-int8", toy["calibration"], observer="percentile")
    with pytest.raises(ValueError, match="ExportedProgram"):
        quantize_program(ToyViT(), "xnnpack-int8", toy["calibration"])
    with pytest.raises(ValueError, match="unknown Qualcomm SoC"):
        quantize_program(program, "qnn-8a8w", toy["calibration"], soc_model="SM0000", progress=False)


def test_patterns_match_paths_and_their_ancestors():
    matches = compile_patterns(["head", "blocks.*.fc2", "re:aggregator\\.(frame|global)_blocks\\.0"])
    assert matches("head") and matches("head.proj.0")
    assert matches("blocks.3.fc2") and not matches("blocks.3.fc1")
    assert matches("aggregator.frame_blocks.0.attn.qkv") and not matches("aggregator.frame_blocks.10.attn")
    assert not matches("heads")


def test_dynamic_inputs_are_reexported_static_and_said_so():
    torch.manual_seed(0)
    batch = torch.export.Dim("batch", min=2, max=4)
    pair = torch.cat([_images(0), _images(1)])
    program = torch.export.export(ToyViT().eval(), (pair,), dynamic_shapes={"images": {0: batch}})
    result = quantize_program(program, "xnnpack-8da4w", progress=False)
    assert any("static shapes" in note for note in result.notes)
    placeholder = next(n for n in result.program.graph.nodes if n.op == "placeholder" and n.name == "images")
    assert tuple(placeholder.meta["val"].shape) == (2, 3, IMAGE, IMAGE)


class ConvSkipUnit(nn.Module):
    """conv → (relu → conv → relu → conv) + the first conv's output: the int8 conv's output feeds both a
    ReLU (quantized with the next conv) and a float residual add, as in VGGT-Ω's DPT fusion units."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.conv1 = nn.Conv2d(16, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 16, 3, padding=1)
        self.head = nn.Linear(16, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.conv2(F.relu(self.conv1(F.relu(x)))) + x
        return self.head(x.mean(dim=(2, 3)))


def test_w4_conv_output_read_by_relu_and_skip_loads_and_runs():
    """Each reader of a dequantized tensor gets its own dequantize node: shared with the quantized ReLU,
    XNNPACK gave the residual add a quantized input and refused the program at load."""
    torch.manual_seed(0)
    model = ConvSkipUnit().eval()
    images = [torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(s)) for s in range(3)]
    program = torch.export.export(model, (images[0],))
    result = quantize_program(program, "xnnpack-8da4w", [(x,) for x in images], progress=False)
    shared = [n.name for n in _nodes(result.program, "dequantize") if len(n.users) > 1]
    assert shared == []
    _, output, _ = _lower_and_run(result.program, images[1])
    with torch.no_grad():
        assert _rel_l2(output, model(images[1])) < 0.1


class ConvPerFrame(nn.Module):
    """One conv applied to each half of the batch, as VGGT's DPT heads run frames in groups under an
    attention budget (two calls read the same weight and bias), then a conv called once."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(32, 64, 3, padding=1)
        self.mix = nn.Conv2d(64, 16, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        per_frame = torch.cat([self.conv(F.relu(x[:1])), self.conv(F.relu(x[1:]) * 3.0)], 0)
        return self.mix(per_frame)


def _conv_per_frame(recipe: str) -> tuple[nn.Module, list[torch.Tensor], object]:
    """ConvPerFrame, its three calibration inputs and its program quantized with `recipe`."""
    torch.manual_seed(0)
    model = ConvPerFrame().eval()
    images = [torch.randn(2, 32, 12, 12, generator=torch.Generator().manual_seed(s)) for s in range(3)]
    program = torch.export.export(model, (images[0],))
    return model, images, quantize_program(program, recipe, [(x,) for x in images], progress=False)


def _check_lowered_and_cached_run(model: nn.Module, image: torch.Tensor, program, runner, tmp_path) -> dict:
    """Lowers `program` to one delegate, checks it against eager, then runs it through the C++ runner, whose
    priming run writes the packed-weight cache that the measured run reads; returns the bench report."""
    pte = tmp_path / "conv_per_frame.pte"
    _, output, outside = _lower_and_run(program, image, save_to=pte)
    assert not outside, outside
    with torch.no_grad():
        assert _rel_l2(output, model(image)) < 0.05
    report = run_bench(pte, runner=runner, iters=1, warmup=0, inputs=[image.numpy()], echo=lambda _: None)
    assert report["weight_cache"] and report["check"]["ok"], report["check"]
    return report


def test_layer_called_twice_stays_float_under_int8_and_the_program_loads(runner, tmp_path):
    """PT2E observes a weight shared by two calls at its first call only: that call came out int8, the
    second float, reading the bias XNNPACK had defined as int32 for the first, and the program was refused
    at load (`Failed to create convolution node … xnn_status_invalid_parameter`; VGGT-1B int8 at 518², whose
    depth head runs frames in groups). Under XNNPACK int8 such layers stay float at every call, with a note
    (w4's convolutions: next test); the layer called once is still quantized. The C++ runner, whose XNNPACK weight cache keys packed weights by
    weight and bias names, agrees with the Python runtime."""
    model, images, result = _conv_per_frame("xnnpack-int8")
    assert result.quantized_layers == ["mix"] and "conv" in result.float_layers
    assert any("called more than once stay float" in note and "conv" in note for note in result.notes)
    convs = _nodes(result.program, "aten.conv2d")
    assert [("dequantize" in str(c.args[1].target)) for c in convs] == [False, False, True]
    _check_lowered_and_cached_run(model, images[1], result.program, runner, tmp_path)


def test_conv_called_twice_is_quantized_at_every_call_with_one_range_under_w4(runner, tmp_path):
    """w4's convolutions (static int8, every call annotated): with a range of its own per call, the C++
    runner's XNNPACK weight cache, which keys packed weights (int32 bias with the input scale folded in) by
    weight and bias names, ran the second call on the first call's packing, so such layers were kept float,
    and a DPT head run over frame groups lost its int8 convolutions. Now every call is quantized with one
    input range and one output range per layer, and the runner with its weight cache equals the Python
    runtime."""
    model, images, result = _conv_per_frame("xnnpack-8da4w")
    assert result.quantized_layers == ["conv", "mix"] and result.float_layers == []
    assert any("called more than once" in note and "conv" in note for note in result.notes)
    convs = _nodes(result.program, "aten.conv2d")
    assert [("dequantize" in str(c.args[1].target)) for c in convs] == [True, True, True]
    # One input range and one output range for both calls of `conv` (the second call's input is 3x larger).
    inputs = [c.args[0].args[1:3] for c in convs[:2]]
    outputs = [next(iter(c.users)).args[1:3] for c in convs[:2]]
    assert inputs[0] == inputs[1] and outputs[0] == outputs[1], (inputs, outputs)
    report = _check_lowered_and_cached_run(model, images[1], result.program, runner, tmp_path)
    assert report["check"]["outputs"][0]["rel_l2"] <= 1e-6, report["check"]


class LinearChain(nn.Module):
    """fc2 reads fc1's output directly (no op in between), as the camera trunk's embed_pose reads pose_branch.fc2."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(32, 64), nn.Linear(64, 64), nn.Linear(64, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc3(F.relu(self.fc2(self.fc1(x))))


@pytest.mark.parametrize("recipe", ["xnnpack-int8", "qnn-8a8w"])
def test_layer_reading_a_kept_float_layer_directly_stays_float_whole(recipe):
    """Keeping fc1 float took the input quantization off fc2 (it reads fc1's output) but left its weight
    quantized: a dequantized weight under a float input, which XNNPACK has no kernel for, so the weight's
    dequantize fell outside the delegate and `to_executorch` failed ("Missing out variants:
    dequantize_per_channel"). Such a layer now stays float whole, and is reported so."""
    torch.manual_seed(0)
    model = LinearChain().eval()
    xs = [torch.randn(8, 32, generator=torch.Generator().manual_seed(s)) for s in range(3)]
    program = torch.export.export(model, (xs[0],))
    result = quantize_program(program, recipe, xs, keep_float=["fc1"], progress=False)
    assert result.quantized_layers == ["fc3"] and result.float_layers == ["fc1", "fc2"]
    weights = [str(n.args[1].target) for n in _nodes(result.program, "aten.linear")]
    assert ["dequantize" in w for w in weights] == [False, False, True], weights
    if recipe.startswith("xnnpack"):
        _, output, outside = _lower_and_run(result.program, xs[1])
        assert not outside, outside
        with torch.no_grad():
            assert _rel_l2(output, model(xs[1])) < 0.05


class OddInputs(nn.Module):
    """A linear with 9 inputs (as VGGT's camera head embeds its 9-number pose encoding) before wider ones."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(9, 64)
        self.body = nn.Linear(64, 64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(F.gelu(self.embed(x)))


def test_w4_per_channel_keeps_layers_xnnpack_cannot_block_float():
    """Per-channel int4 (group_size 0) on a 9-input linear used to stop the lowering ("group_size to be a
    multiple of 32, but got 9"); such a layer now stays float, said in a note, and the program runs."""
    torch.manual_seed(0)
    model = OddInputs().eval()
    x = torch.randn(4, 9)
    program = torch.export.export(model, (x,))
    result = quantize_program(program, "xnnpack-8da4w", progress=False, group_size=0)
    assert result.quantized_layers == ["body"] and result.float_layers == ["embed"]
    assert any("embed: 4-bit per channel" in note for note in result.notes), result.notes
    _, output, _ = _lower_and_run(result.program, x)
    with torch.no_grad():
        assert _rel_l2(output, model(x)) < 0.25
