"""`vggt-et compile --max-frames N` on `tiny`: one .pte whose method for k frames equals the fixed-k program;
the Python runtime, the CLI and the host C++ runner pick the method by the input's frame count and refuse
counts outside 1..N with exit code 2."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from bench_script import run_benchmark
from click.testing import CliRunner

from vggt_et.cli import main
from vggt_et.options import CompileOptions
from vggt_et.outputs.inference import program_info, run_program
from vggt_et.pipeline.compile import compile_model
from vggt_et.runtime.bench import run_bench

SHAPE = {"height": 28, "width": 42}
MAX_FRAMES = 4


def _compile(tmp_path_factory, name: str, **kw) -> str:
    """A tiny program (random weights, depth, the default attention budget) and its report beside it."""
    out = tmp_path_factory.mktemp(name) / f"{name}.pte"
    report = str(out.with_suffix(".json"))
    options = CompileOptions(
        preset="tiny", random_weights=True, output=str(out), report=report, **SHAPE, **kw
    )
    compile_model(options, quiet=True)
    return str(out)


@pytest.fixture(scope="module")
def multi(tmp_path_factory) -> str:
    return _compile(tmp_path_factory, "multi", max_frames=MAX_FRAMES)


def _images(frames: int) -> np.ndarray:
    return np.random.default_rng(frames).random((1, frames, 3, 28, 42), dtype=np.float32)


def test_metadata_lists_every_frame_count(multi):
    info = program_info(multi)
    assert info.frame_counts == (1, 2, 3, 4) and info.frames == MAX_FRAMES
    assert info.frame_methods[MAX_FRAMES] == "forward"
    assert info.with_frames(3).input_shape == (1, 3, 3, 28, 42)


@pytest.fixture(scope="module")
def fixed(tmp_path_factory):
    """Fixed-shape programs by frame count, compiled on first use."""
    programs: dict[int, str] = {}

    def get(frames: int) -> str:
        if frames not in programs:
            programs[frames] = _compile(tmp_path_factory, f"fixed{frames}", frames=frames)
        return programs[frames]

    return get


def _check_equals_fixed(multi: str, fixed: str, frames: int) -> None:
    ours, theirs = run_program(multi, _images(frames)), run_program(fixed, _images(frames))
    for name, want in theirs.items():
        got = ours[name]
        assert got.shape == want.shape and got.shape[1] == frames
        assert np.linalg.norm(got - want) <= 1e-5 * np.linalg.norm(want)


@pytest.mark.parametrize("frames", [1, 3])
def test_frame_count_equals_the_fixed_program(multi, fixed, frames):
    _check_equals_fixed(multi, fixed(frames), frames)


@pytest.mark.slow
@pytest.mark.parametrize("frames", [2, 4])
def test_other_frame_counts_equal_the_fixed_programs(multi, fixed, frames):
    _check_equals_fixed(multi, fixed(frames), frames)


def test_weights_are_stored_once(multi, fixed):
    """Four methods, one copy of the weights: not much bigger than one fixed program (tiny's weights are
    3 MiB, each method's XNNPACK graph about 0.2 MiB)."""
    assert Path(multi).stat().st_size <= 1.3 * Path(fixed(3)).stat().st_size


@pytest.mark.parametrize("frames", [1, 3])
def test_host_runner_picks_the_method_by_frame_count(multi, runner, frames):
    report = run_bench(
        multi,
        runner=runner,
        iters=1,
        warmup=0,
        inputs=[_images(frames)],
        method=None,  # picked by the input's shape, in Python and in the runner
        echo=lambda _: None,
    )
    assert report["check"]["ok"], report["check"]
    assert report["check"]["outputs"][0]["shape"][1] == frames


def test_host_runner_refuses_an_out_of_range_count(multi, runner, tmp_path):
    np.save(tmp_path / "x.npy", _images(MAX_FRAMES + 1))
    done = subprocess.run(
        [str(runner), "--model", multi, "--input", str(tmp_path / "x.npy"), "--iters", "1", "--warmup", "0"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert "no method of this program takes" in done.stderr and "forward_1" in done.stderr


@pytest.mark.parametrize("command", ["run", "compare", "bench"])
def test_cli_refuses_frame_counts_the_program_lacks(multi, tmp_path, command):
    extra = {
        "run": ["-o", str(tmp_path / "out")],
        "compare": ["--preset", "tiny", "--random-weights"],
        "bench": ["--host"],
    }[command]
    result = CliRunner().invoke(main, [command, multi, "--frames", str(MAX_FRAMES + 1), *extra])
    assert result.exit_code == 2, result.output
    assert "this program takes 1..4 frames, got 5" in result.output
    # One error line, no traceback (ExecuTorch's own cpuinfo log lines may precede it on first load).
    assert [line for line in result.output.splitlines() if "error" in line] == [
        "vggt-et: error: this program takes 1..4 frames, got 5; compile with --max-frames 5 for more"
    ]
    assert "Traceback" not in result.output


def test_cli_run_at_two_frames(multi, tmp_path):
    result = CliRunner().invoke(main, ["run", multi, "--frames", "2", "-o", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "out").glob("depth_[0-9]*.npy")) == [
        "depth_00.npy",
        "depth_01.npy",
    ]
    assert program_info(multi).frame_methods[2] == "forward_2"


def test_benchmark_checks_every_k_against_its_fixed_program(multi, fixed, tmp_path):
    """benchmarks/max_frames.py on this module's programs (taken as already compiled, --resume): per k the
    runner's latency on both programs, the worst rel. L2 between their outputs, the size ratio."""
    out = tmp_path / "out"
    out.mkdir()
    names = {multi: f"tiny-fp32-max{MAX_FRAMES}", fixed(1): "tiny-fp32-s1", fixed(3): "tiny-fp32-s3"}
    for program, name in names.items():
        for suffix in (".pte", ".json"):
            (out / f"{name}{suffix}").symlink_to(Path(program).with_suffix(suffix))
    shape = ["--height", str(SHAPE["height"]), "--width", str(SHAPE["width"])]
    args = ["--preset", "tiny", *shape, "--max-frames", str(MAX_FRAMES), "--frames", "1,3", "--rounds", "1"]
    table = run_benchmark("max_frames.py", *args, "--lock", "", "--out", str(out), "--resume")
    rows = json.loads((out / "rows.json").read_text())
    assert [r["frames"] for r in rows] == [1, 3]
    for row in rows:
        # Each method is lowered as its fixed program is, so the runner gives the same numbers.
        assert row["rel_l2"] <= 1e-6, row
        assert row["fixed_ms"] > 0 and row["multi_ms"] > 0 and row["multi_rss_mib"] > 1, row
    assert "worst rel. L2 over k: " in table and "worst latency ratio: " in table
    assert f"multi-method program: {Path(multi).stat().st_size / 2**20:.1f} MiB" in table
    # Without --keep-pte the benchmark removes its programs (GiBs each on VGGT-1B): here, the links.
    assert not list(out.glob("*.pte"))


def test_frames_beside_max_frames_is_refused_not_ignored(tmp_path):
    """`--frames 2 --max-frames 4` compiled the 1..4 program and dropped --frames without a word."""
    out = tmp_path / "m.pte"
    args = [
        "compile",
        "--preset",
        "tiny",
        "--random-weights",
        "--max-frames",
        "4",
        "--frames",
        "2",
        "-o",
        str(out),
    ]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert [line for line in result.output.splitlines() if line.strip()] == [
        "vggt-et: error: --max-frames 4 makes one program for 1..4 frames and replaces --frames 2; drop one of them"
    ]
    assert list(tmp_path.iterdir()) == []
