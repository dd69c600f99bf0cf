"""`vggt-et compile` on `tiny`: programs run and match eager; bad input is one line and exit code 2."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import save_file

import vggt_et
from vggt_et.cli import main
from vggt_et.commands.compare import compare
from vggt_et.options import CompileOptions
from vggt_et.outputs.inference import program_info, run_program
from vggt_et.pipeline.compile import compile_model

SHAPE = {"frames": 2, "height": 28, "width": 42}
ALL_OUTPUTS = ("depth", "points", "camera")


def _compile(tmp_path_factory, name: str, **kw) -> tuple[str, dict]:
    out = tmp_path_factory.mktemp(name) / f"{name}.pte"
    options = CompileOptions(
        preset="tiny", random_weights=True, output=str(out), report=str(out) + ".json", **SHAPE, **kw
    )
    return str(out), compile_model(options, quiet=True)


@pytest.fixture(scope="module")
def eager():
    return vggt_et.load_model("tiny", random_weights=True)


@pytest.fixture(scope="module")
def fp32_program(tmp_path_factory):
    record = tmp_path_factory.mktemp("etrecord") / "fp32.etrecord"
    return _compile(tmp_path_factory, "fp32", outputs=ALL_OUTPUTS, etrecord=str(record))


def test_xnnpack_fp32_matches_eager_and_is_one_delegate(fp32_program, eager) -> None:
    path, report = fp32_program
    info = program_info(path)
    assert info.outputs == ("depth", "depth_conf", "world_points", "world_points_conf", "pose_enc")
    assert info.input_shape == (1, 2, 3, 28, 42)
    result = compare(path, eager)
    for name, metrics in result["outputs"].items():
        assert metrics["rel_l2"] <= 1e-5, (name, metrics)
    assert report["delegated_fraction"] >= 0.99
    assert report["delegate_segments"] <= 3
    saved = json.loads(open(path + ".json").read())
    for key in (
        "backend",
        "quant",
        "preset",
        "input_shape",
        "outputs",
        "pte_bytes",
        "sha256",
        "peak_rss_bytes",
        "stage_seconds",
        "delegated_fraction",
        "delegate_segments",
        "non_delegated",
        "versions",
    ):
        assert key in saved, key
    assert saved["sha256"] == hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_same_command_twice_gives_identical_bytes(tmp_path_factory) -> None:
    _, first = _compile(tmp_path_factory, "det_a", outputs=("camera",))
    _, second = _compile(tmp_path_factory, "det_b", outputs=("camera",))
    assert first["sha256"] == second["sha256"]


def test_fp16_program_stays_within_one_percent(tmp_path_factory, eager) -> None:
    path, report = _compile(tmp_path_factory, "fp16", quant="fp16", outputs=("depth", "camera"))
    result = compare(path, eager)
    for name, metrics in result["outputs"].items():
        assert metrics["rel_l2"] <= 1e-2, (name, metrics)
    fp32_weight_bytes = 2 * report["weight_bytes"]  # the report counts the float16 weights
    assert report["pte_bytes"] < 0.75 * fp32_weight_bytes


def test_portable_program_matches_eager(tmp_path_factory, eager) -> None:
    path, report = _compile(tmp_path_factory, "portable", backend="portable", outputs=("depth",))
    assert report["delegate_segments"] == 0
    result = compare(path, eager)
    assert result["outputs"]["depth"]["rel_l2"] <= 1e-5


def test_qnn_without_sdk_is_one_clear_error_before_work(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("QNN_SDK_ROOT", raising=False)
    result = CliRunner().invoke(
        main,
        [
            "compile",
            "--preset",
            "tiny",
            "--random-weights",
            "--backend",
            "qnn",
            "-o",
            str(tmp_path / "q.pte"),
        ],
    )
    assert result.exit_code == 2
    assert "QNN_SDK_ROOT" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "q.pte").exists()


def test_qnn_stages_before_the_partitioner_run_without_sdk(tmp_path_factory, monkeypatch) -> None:
    monkeypatch.delenv("QNN_SDK_ROOT", raising=False)
    path, report = _compile(
        tmp_path_factory, "qnn", backend="qnn", stop_before_lowering=True, outputs=("depth",)
    )
    program = torch.export.load(path)
    ops = {str(n.target) for n in program.graph.nodes if n.op == "call_function"}
    assert not any("scaled_dot_product" in op for op in ops)
    ranks = [
        n.meta["val"].dim()
        for n in program.graph.nodes
        if n.op == "call_function" and isinstance(n.meta.get("val"), torch.Tensor)
    ]
    assert max(ranks) <= 4
    assert report["delegated_fraction"] is None


def test_stop_before_lowering_says_it_wrote_an_exported_program(tmp_path) -> None:
    out = tmp_path / "m.pt2"
    shape = [f"--{k}={v}" for k, v in SHAPE.items()]
    args = [
        "compile",
        "--preset",
        "tiny",
        "--random-weights",
        *shape,
        "--stop-before-lowering",
        "-o",
        str(out),
    ]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    summary = result.output.strip().splitlines()[-2:]
    assert summary[0].startswith(f"wrote exported program (.pt2) {out}"), summary
    assert summary[1].startswith("not lowered; peak RSS"), summary
    assert torch.export.load(str(out)).graph is not None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--height", "30"], "not a positive multiple of 14"),
        (["--frames", "0"], "--frames must be at least 1"),
        (["--outputs", "depth,normals"], "unknown output normals"),
        (["--attention-budget", "lots"], "--attention-budget"),
        (["-o", "/nonexistent-dir/x.pte"], "does not exist"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, message, tmp_path) -> None:
    base = ["compile", "--preset", "tiny", "--random-weights", "-o", str(tmp_path / "m.pte")]
    result = CliRunner().invoke(main, base + args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not list(tmp_path.iterdir())


def test_checkpoint_that_does_not_fit_is_one_line_and_exit_2(tmp_path) -> None:
    ckpt = tmp_path / "tiny.safetensors"
    model = vggt_et.load_model("tiny", random_weights=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(ckpt))
    result = CliRunner().invoke(
        main, ["compile", "--preset", "small", "--checkpoint", str(ckpt), "-o", str(tmp_path / "m.pte")]
    )
    assert result.exit_code == 2
    assert "does not fit preset 'small'" in result.output and "fits preset 'tiny'" in result.output
    assert not (tmp_path / "m.pte").exists()


def test_run_writes_depth_png_and_point_cloud(fp32_program, tmp_path) -> None:
    path, _ = fp32_program
    result = CliRunner().invoke(main, ["run", path, "-o", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    out = tmp_path / "out"
    depth = np.load(out / "depth_00.npy")
    assert depth.shape == (28, 42) and (depth > 0).all()
    assert (out / "depth_01.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    header = (out / "points.ply").read_bytes()[:200].decode("latin-1")
    assert header.startswith("ply\nformat binary_little_endian 1.0") and "element vertex 2352" in header


def test_run_and_compare_outputs_are_the_eager_ones(fp32_program, eager) -> None:
    path, _ = fp32_program
    images = np.random.default_rng(0).random((1, 2, 3, 28, 42), dtype=np.float32)
    outputs = run_program(path, images)
    with torch.no_grad():
        reference = eager(torch.from_numpy(images))
    np.testing.assert_allclose(outputs["pose_enc"], reference["pose_enc"].numpy(), rtol=1e-4, atol=1e-5)


def test_etdump_of_a_run_maps_onto_the_etrecord(fp32_program, tmp_path) -> None:
    """Profiling: ExecuTorch's Inspector reads our ETRecord together with an ETDump of the program."""
    from executorch.devtools import Inspector

    from vggt_et.runtime.program import PteProgram

    path, report = fp32_program
    etrecord = report["arguments"]["etrecord"]
    program = PteProgram(path, enable_etdump=True)
    program.run([np.random.default_rng(0).random((1, 2, 3, 28, 42), dtype=np.float32)])
    etdump = tmp_path / "run.etdp"
    program.write_etdump(etdump)
    inspector = Inspector(etdump_path=str(etdump), etrecord=etrecord)
    events = [event for block in inspector.event_blocks for event in block.events]
    assert events and any(event.perf_data is not None for event in events)


def test_host_runner_equals_python_runtime_on_tiny_vggt(fp32_program) -> None:
    from vggt_et.runtime.bench import run_bench
    from vggt_et.runtime.runner_build import build_runner

    path, _ = fp32_program
    report = run_bench(path, runner=build_runner("host"), iters=1, echo=lambda _: None)
    assert report["check"]["ok"]
    assert max(o["rel_l2"] for o in report["check"]["outputs"]) <= 1e-6


def test_aarch64_runner_under_qemu_matches_on_tiny_vggt(fp32_program, tmp_path) -> None:
    import subprocess

    from vggt_et.runtime.program import PteProgram
    from vggt_et.runtime.runner_build import QEMU_AARCH64, build_runner

    path, _ = fp32_program
    images = np.random.default_rng(3).random((1, 2, 3, 28, 42), dtype=np.float32)
    np.save(tmp_path / "images.npy", images)
    runner = build_runner("aarch64-linux")
    args = [
        "--model",
        path,
        "--input",
        str(tmp_path / "images.npy"),
        "--output-dir",
        str(tmp_path),
        "--iters",
        "1",
    ]
    done = subprocess.run([*QEMU_AARCH64, str(runner), *args], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    for index, want in enumerate(PteProgram(path).run([images])):
        np.testing.assert_allclose(np.load(tmp_path / f"output_{index}.npy"), want, rtol=1e-5, atol=1e-5)
