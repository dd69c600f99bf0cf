"""`vggt-et fisher` and `--quant w4-fisher` on `tiny`: statistics file, exact rotation, bit plan, program."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

import vggt_et
from vggt_et.cli import main
from vggt_et.data.calibration import calibration_samples
from vggt_et.fgq.rotation import rotate_vggt
from vggt_et.fgq.w4_fisher import W4FisherSettings, prepare_w4_fisher
from vggt_et.options import CompileOptions, ProgramShape, W4FisherFlags
from vggt_et.outputs.inference import run_program
from vggt_et.pipeline.compile import compile_model
from vggt_et.quantizers.blockwise import AllBlockInputs, _batched, in_forward_order
from vggt_et.quantizers.clipping import capture_block_inputs
from vggt_et.quantizers.fisher import FisherStats
from vggt_et.quantizers.recipes import quantize_program
from vggt_et.quantizers.rotation import DelegableRotatedLayerNorm, StreamRotation

SHAPE = {"frames": 2, "height": 28, "width": 42}
SHAPE_ARGS = ["--frames", "2", "--height", "28", "--width", "42"]
TINY_BLOCKS = [f"{kind}_{i}" for i in range(4) for kind in ("frame", "global")]


pytestmark = pytest.mark.usefixtures("one_thread")


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.fixture(scope="module")
def fisher_file(tmp_path_factory) -> tuple[str, str]:
    """`vggt-et fisher` on tiny, all three tasks, with the rotation (compile's default)."""
    path = str(tmp_path_factory.mktemp("fisher") / "fisher.pt")
    args = ["fisher", "--preset", "tiny", "--random-weights", *SHAPE_ARGS, "--calib-samples", "2", "-o", path]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    return path, result.output


def test_fisher_file_shape_metadata_and_heatmap(fisher_file) -> None:
    path, output = fisher_file
    stats = FisherStats.load(path)
    assert stats.raw.shape == (3, 8, 64)  # tasks x 2*depth blocks x embed_dim
    assert stats.task_names == ["camera", "depth", "points"]
    assert stats.block_names == TINY_BLOCKS
    # Every task's output depends on every block.
    assert torch.isfinite(stats.raw).all() and (stats.raw.sum(dim=2) > 0).all()
    meta = stats.metadata
    assert (meta["preset"], meta["frames"], meta["height"], meta["width"]) == ("tiny", 2, 28, 42)
    assert meta["samples"] == stats.num_samples == 2
    assert meta["tasks"] == ["camera", "depth", "points"] and meta["rotation"]["applied"] is True
    with open(path.replace(".pt", ".png"), "rb") as png:
        assert png.read(8) == b"\x89PNG\r\n\x1a\n"
    table = output.split("most sensitive blocks")[1]
    assert sum(name in table for name in TINY_BLOCKS) == 8  # all blocks of tiny listed (top 10)


def test_rotation_leaves_fp32_outputs_unchanged(tiny_model) -> None:
    images = torch.rand(1, 2, 3, 28, 42, generator=torch.Generator().manual_seed(1))
    rotated = copy.deepcopy(tiny_model).eval()
    report = rotate_vggt(rotated)
    with torch.no_grad():
        reference, output = tiny_model.eval()(images), rotated(images)
    for key in ("depth", "pose_enc", "world_points", "depth_conf"):
        assert _relative(output[key], reference[key]) <= 1e-5, key
    # 2 norms x 8 blocks + the two DPT heads' norms, all in the delegable form; entry and camera exit added.
    assert len(report.norms_rewritten) == 18
    assert sum(isinstance(m, DelegableRotatedLayerNorm) for m in rotated.modules()) == 18
    assert sum(isinstance(m, StreamRotation) for m in rotated.modules()) == 2
    qkv = rotated.aggregator.frame_blocks[0].attn.qkv.weight
    assert not torch.allclose(qkv, tiny_model.aggregator.frame_blocks[0].attn.qkv.weight)


def _prepared(budget: float, **switches: bool) -> tuple[dict, dict]:
    model = vggt_et.load_model("tiny", random_weights=True, heads=["depth"]).eval()
    shape = ProgramShape(2, 28, 42, 14)
    samples = calibration_samples(None, shape, 2)
    options = CompileOptions(preset="tiny", random_weights=True, **SHAPE)
    settings = W4FisherSettings(w4_budget=budget, **switches)
    return prepare_w4_fisher(model, options, shape, ["depth"], samples, settings)


def test_mixed_precision_plan_respects_budget_and_clipping_helps() -> None:
    bits, report = _prepared(0.75)
    assert len(bits) == 32 and all(k.startswith("model.aggregator.") for k in bits)  # 8 blocks x 4 linears
    assert set(bits.values()) == {4, 8}
    assert report["w4_fraction"] >= 0.75
    sizes = report["aggregator_weight_bytes"]
    assert sizes["all_w4"] < sizes["planned"] < sizes["fp32"]
    blocks = report["blocks"]
    assert list(blocks) == TINY_BLOCKS
    for entry in blocks.values():
        assert entry["final_weighted"] <= entry["rtn_weighted"]
        assert entry["final_unweighted"] > 0
    assert any(entry["clipped"] for entry in blocks.values())
    assert report["fisher"]["source"] == "computed" and report["notes"]

    bits, report = _prepared(0.75, mixed_precision=False, clipping=False, rotation=False)
    assert set(bits.values()) == {4} and report["w4_fraction"] == 1.0 and "rotation" not in report
    assert not any(entry["clipped"] for entry in report["blocks"].values())


def test_one_capture_equals_the_per_block_full_forward_capture(tiny_model) -> None:
    samples = calibration_samples(None, ProgramShape(2, 28, 42, 14), 2)
    paths = ["aggregator.frame_blocks.1", "aggregator.global_blocks.3"]
    lazy = AllBlockInputs(tiny_model, paths, samples)
    assert list(lazy) == paths and paths[0] in lazy and "aggregator" not in lazy
    for path in paths:
        full = capture_block_inputs(tiny_model, [path], samples)[path]
        assert len(lazy[path]) == len(full) == 2
        for (args, kwargs), (full_args, full_kwargs) in zip(lazy[path], full, strict=True):
            assert all(torch.equal(a, b) for a, b in zip(args, full_args, strict=True))
            assert torch.equal(kwargs["pos"], full_kwargs["pos"]) and kwargs.keys() == full_kwargs.keys()


def test_in_forward_order_carries_each_edited_block_on(tiny_model) -> None:
    """Clipping's single batched forward: a block edited in its visit feeds its edited output on."""
    model = copy.deepcopy(tiny_model)
    samples = calibration_samples(None, ProgramShape(2, 28, 42, 14), 2)
    paths = ["aggregator.frame_blocks.1", "aggregator.global_blocks.1", "aggregator.frame_blocks.2"]
    before = capture_block_inputs(model, paths, [_batched(samples)])
    seen = {}

    def visit(index, call) -> None:
        seen[index] = call
        if index == 0:
            with torch.no_grad():
                model.get_submodule(paths[0]).mlp.fc2.weight.mul_(0.5)

    in_forward_order(model, paths, samples, visit)
    after = capture_block_inputs(model, paths, [_batched(samples)])
    assert seen[0][0][0].shape[0] == 2 * 2  # both samples' frames in one call
    assert torch.equal(seen[0][0][0], before[paths[0]][0][0][0])
    for index, path in enumerate(paths[1:], start=1):
        assert torch.equal(seen[index][0][0], after[path][0][0][0])  # what the edited block produces
        assert not torch.allclose(seen[index][0][0], before[path][0][0][0])


def test_bits_by_layer_gives_per_channel_int8_and_refuses_strangers() -> None:
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 32)).eval()
    program = torch.export.export(model, (torch.randn(3, 64),))
    result = quantize_program(program, "xnnpack-8da4w", progress=False, bits_by_layer={"2": 8})
    weights = dict(result.program.named_parameters())
    assert weights["0.weight"].target_dtype == torch.int4 and tuple(weights["0.weight"].block_size) == (1, 32)
    assert weights["2.weight"].target_dtype == torch.int8 and tuple(weights["2.weight"].block_size) == (1, 64)
    with pytest.raises(ValueError, match="not linears of this program: nope"):
        quantize_program(program, "xnnpack-8da4w", progress=False, bits_by_layer={"nope": 8})


@pytest.mark.parametrize(
    "extra_args, message",
    [
        (["--height", "56"], "computed for height 28, not 56"),
        (["--no-rotation"], "with the rotation"),
        (["--outputs", "depth", "--w4-budget", "1.5"], "--w4-budget"),
    ],
)
def test_mismatched_fisher_file_is_one_line_error(fisher_file, tmp_path, extra_args, message) -> None:
    args = ["compile", "--preset", "tiny", "--random-weights", "--quant", "w4-fisher", *SHAPE_ARGS]
    args += ["--fisher", fisher_file[0], "-o", str(tmp_path / "x.pte"), *extra_args]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert message in result.output and len(result.output.strip().splitlines()) == 1, result.output
    assert not (tmp_path / "x.pte").exists()


def test_w4_fisher_flags_refused_elsewhere(tmp_path) -> None:
    base = ["compile", "--preset", "tiny", "--random-weights", *SHAPE_ARGS, "-o", str(tmp_path / "x.pte")]
    result = CliRunner().invoke(main, [*base, "--quant", "w4", "--no-rotation"])
    assert result.exit_code == 2 and "only apply to --quant w4-fisher" in result.output
    qnn = ["--quant", "w4-fisher", "--backend", "qnn", "--stop-before-lowering"]
    result = CliRunner().invoke(main, [*base, *qnn])
    assert result.exit_code == 2 and "use --backend xnnpack" in result.output


def test_w4_fisher_program_runs_close_to_eager(fisher_file, tmp_path_factory) -> None:
    out = tmp_path_factory.mktemp("w4f") / "w4f.pte"
    options = CompileOptions(
        preset="tiny",
        random_weights=True,
        quant="w4-fisher",
        outputs=("depth", "camera"),
        output=str(out),
        calib_samples=2,
        w4_fisher=W4FisherFlags(fisher=fisher_file[0]),
        **SHAPE,
    )
    report = compile_model(options, quiet=True)
    details = report["w4_fisher"]
    assert details["techniques"] == {"rotation": True, "mixed_precision": True, "fisher_clip": True}
    assert details["fisher"] == {"source": fisher_file[0], "tasks": ["depth", "camera"], "samples": 2}
    assert details["w4_fraction"] >= 0.9 and details["layers_8bit"]
    assert details["notes"] == []  # the file matches: no on-the-fly Fisher, same weights
    assert any("at 8 bit" in note for note in report["quantization"]["notes"])
    assert report["delegated_fraction"] == 1.0 and report["delegate_segments"] == 1, report["non_delegated"]

    images = torch.rand(1, 2, 3, 28, 42, generator=torch.Generator().manual_seed(3))
    eager = vggt_et.load_model("tiny", random_weights=True, heads=["camera", "depth"]).eval()
    with torch.no_grad():
        reference = eager(images)
    outputs = run_program(str(out), images.numpy())
    depth = _relative(torch.from_numpy(np.asarray(outputs["depth"])), reference["depth"])
    pose = _relative(torch.from_numpy(np.asarray(outputs["pose_enc"])), reference["pose_enc"])
    print(f"w4-fisher tiny vs eager: depth rel L2 {depth:.2e}, pose_enc rel L2 {pose:.2e}")
    assert depth < 0.01
    assert pose < 0.5
