"""Bad input to the runner ends in one "error: ..." line and a non-zero exit code, never a crash."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from vggt_et.runtime.program import PteProgram, example_inputs


@pytest.fixture()
def good_inputs(toy: Path, tmp_path: Path) -> list[Path]:
    paths = []
    for index, array in enumerate(example_inputs(PteProgram(toy).inputs)):
        paths.append(tmp_path / f"input_{index}.npy")
        np.save(paths[-1], array)
    return paths


def run_failing(runner: Path, *args: str | Path, code: int = 2) -> str:
    """Runs the runner expecting exit `code`; returns its error line."""
    completed = subprocess.run(
        [str(runner), *map(str, args)], capture_output=True, text=True, errors="replace", timeout=120
    )
    assert completed.returncode == code, (completed.returncode, completed.stderr[-1500:])
    errors = [line for line in completed.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, completed.stderr[-1500:]
    assert completed.stdout.strip() == ""
    return errors[0]


def model_args(toy: Path, inputs: list[Path]) -> list[str | Path]:
    return ["--model", toy, *[part for path in inputs for part in ("--input", path)]]


@pytest.mark.parametrize("keep_fraction", [0.0, 0.01, 0.5, 0.99])
def test_truncated_program(
    runner: Path, toy: Path, good_inputs: list[Path], tmp_path: Path, keep_fraction: float
) -> None:
    truncated = tmp_path / "truncated.pte"
    data = toy.read_bytes()
    truncated.write_bytes(data[: int(len(data) * keep_fraction)])
    message = run_failing(runner, *model_args(truncated, good_inputs))
    assert "cannot load program" in message and "truncated.pte" in message


def test_garbage_program(runner: Path, good_inputs: list[Path], tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pte"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 50_000, dtype=np.uint8).tobytes())
    assert "cannot load program" in run_failing(runner, *model_args(garbage, good_inputs))


def test_missing_program(runner: Path, good_inputs: list[Path], tmp_path: Path) -> None:
    assert "check the path" in run_failing(runner, *model_args(tmp_path / "absent.pte", good_inputs))


def test_raw_input_of_wrong_size(runner: Path, toy: Path, good_inputs: list[Path], tmp_path: Path) -> None:
    short = tmp_path / "short.bin"
    short.write_bytes(b"\0" * 1000)
    message = run_failing(runner, *model_args(toy, [short, good_inputs[1]]))
    assert "input 0" in message and "1000 bytes" in message and "12288" in message


def test_npy_input_of_wrong_shape(runner: Path, toy: Path, good_inputs: list[Path]) -> None:
    message = run_failing(runner, *model_args(toy, [good_inputs[1], good_inputs[1]]))
    assert "shape (1, 1, 32)" in message and "(1, 3, 32, 32)" in message


def test_npy_input_of_wrong_dtype(runner: Path, toy: Path, good_inputs: list[Path], tmp_path: Path) -> None:
    as_double = tmp_path / "double.npy"
    np.save(as_double, np.load(good_inputs[0]).astype(np.float64))
    message = run_failing(runner, *model_args(toy, [as_double, good_inputs[1]]))
    assert "<f8" in message and "float32" in message


def test_truncated_npy_input(runner: Path, toy: Path, good_inputs: list[Path], tmp_path: Path) -> None:
    cut = tmp_path / "cut.npy"
    cut.write_bytes(good_inputs[0].read_bytes()[:3000])
    assert "truncated" in run_failing(runner, *model_args(toy, [cut, good_inputs[1]]))


def test_wrong_number_of_inputs(runner: Path, toy: Path, good_inputs: list[Path]) -> None:
    assert "takes 2 inputs but 1" in run_failing(runner, *model_args(toy, good_inputs[:1]))


def test_missing_input_file(runner: Path, toy: Path, good_inputs: list[Path], tmp_path: Path) -> None:
    message = run_failing(runner, *model_args(toy, [tmp_path / "nope.npy", good_inputs[1]]))
    assert "cannot open input" in message


def test_unknown_method(runner: Path, toy: Path, good_inputs: list[Path]) -> None:
    message = run_failing(runner, *model_args(toy, good_inputs), "--method", "backward")
    assert "no method 'backward'" in message and "forward" in message


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--iters", "0"], "--iters expects an integer >= 1"),
        (["--threads", "two"], "--threads expects an integer"),
        (["--load-mode", "bogus"], "--load-mode expects"),
        (["--frobnicate", "1"], "unknown option"),
        (["--iters"], "--iters needs a value"),
    ],
)
def test_bad_flags(runner: Path, toy: Path, args: list[str], expected: str) -> None:
    assert expected in run_failing(runner, "--model", toy, *args)


def test_missing_model_flag(runner: Path) -> None:
    assert "--model is required" in run_failing(runner)


def test_output_dir_must_exist(runner: Path, toy: Path, good_inputs: list[Path], tmp_path: Path) -> None:
    message = run_failing(runner, *model_args(toy, good_inputs), "--output-dir", tmp_path / "absent")
    assert "not a directory" in message
    assert not (tmp_path / "absent").exists()


def test_fortran_ordered_npy(runner: Path, toy: Path, good_inputs: list[Path], tmp_path: Path) -> None:
    fortran = tmp_path / "fortran.npy"
    np.save(fortran, np.asfortranarray(np.load(good_inputs[0])))
    assert "Fortran-ordered" in run_failing(runner, *model_args(toy, [fortran, good_inputs[1]]))


def test_not_an_npy_file(runner: Path, toy: Path, good_inputs: list[Path], tmp_path: Path) -> None:
    text = tmp_path / "text.npy"
    text.write_text("just some text, not numpy")
    assert "bad magic" in run_failing(runner, *model_args(toy, [text, good_inputs[1]]))


def test_npy_format_version_2_is_read(
    runner: Path, toy: Path, good_inputs: list[Path], tmp_path: Path
) -> None:
    version2 = tmp_path / "v2.npy"
    with version2.open("wb") as stream:
        np.lib.format.write_array(stream, np.load(good_inputs[0]), version=(2, 0))
    outputs = []
    for first in (good_inputs[0], version2):
        out = tmp_path / first.stem
        out.mkdir()
        completed = subprocess.run(
            [str(runner), *map(str, model_args(toy, [first, good_inputs[1]])), "--output-dir", str(out)],
            capture_output=True,
            text=True,
            errors="replace",
            timeout=120,
        )
        assert completed.returncode == 0, completed.stderr[-1500:]
        outputs.append(np.load(out / "output_0.npy"))
    np.testing.assert_array_equal(outputs[0], outputs[1])
