"""`vggt_et.runtime.program`: loading a `.pte` with ExecuTorch's Python runtime, checked inputs, threads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from toy_runtime import ToyPatchAttention, toy_inputs

from vggt_et.runtime.program import (
    ProgramError,
    PteProgram,
    example_inputs,
    load_program,
    set_threads,
    thread_count,
)


def test_specs_come_from_method_meta(toy: Path) -> None:
    program = load_program(toy)
    assert [spec.shape for spec in program.inputs] == [(1, 3, 32, 32), (1, 1, 32)]
    assert [spec.shape for spec in program.outputs] == [(1, 64, 8), (1, 32)]
    assert [spec.name for spec in program.outputs] == ["output_0", "output_1"]
    assert all(spec.dtype == np.float32 for spec in program.inputs + program.outputs)
    assert program.inputs[0].nbytes == 3 * 32 * 32 * 4


def test_run_matches_eager_model(toy: Path) -> None:
    torch.manual_seed(0)
    model = ToyPatchAttention().eval()
    image, shift = toy_inputs(seed=7)
    with torch.no_grad():
        expected = model(image, shift)
    outputs = PteProgram(toy).run([image.numpy(), shift.numpy()])
    for got, want in zip(outputs, expected, strict=True):
        np.testing.assert_allclose(got, want.numpy(), rtol=1e-4, atol=1e-5)


def test_outputs_are_copies(toy: Path) -> None:
    program = PteProgram(toy)
    first = program.run(example_inputs(program.inputs, seed=1))
    kept = [array.copy() for array in first]
    program.run(example_inputs(program.inputs, seed=2))
    for array, copy in zip(first, kept, strict=True):
        np.testing.assert_array_equal(array, copy)


def test_input_checks(toy: Path) -> None:
    program = PteProgram(toy)
    image, shift = example_inputs(program.inputs)
    with pytest.raises(ProgramError, match="takes 2 inputs, got 1"):
        program.run([image])
    with pytest.raises(
        ProgramError, match="input_0 has shape \\(1, 3, 16, 16\\).*expects \\(1, 3, 32, 32\\)"
    ):
        program.run([image[:, :, :16, :16], shift])
    with pytest.raises(ProgramError, match="input_1 has dtype float64 but the program expects float32"):
        program.run([image, shift.astype(np.float64)])


def test_truncated_and_missing_programs(toy: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.pte"
    cut.write_bytes(toy.read_bytes()[:4000])
    with pytest.raises(ProgramError, match="cannot load program .*cut.pte.*truncated"):
        PteProgram(cut)
    with pytest.raises(ProgramError, match="check the path"):
        PteProgram(tmp_path / "absent.pte")
    with pytest.raises(ProgramError, match="no method 'decode' \\(it has: forward\\)"):
        PteProgram(toy, "decode")


def test_thread_count_control(toy: Path) -> None:
    before = thread_count()
    try:
        assert set_threads(1) == 1
        assert PteProgram(toy).threads == 1
        assert PteProgram(toy, threads=2).threads == 2
    finally:
        set_threads(max(before, 1))
    with pytest.raises(ProgramError, match="must be >= 1"):
        set_threads(0)


def test_example_inputs_are_deterministic(toy: Path) -> None:
    specs = PteProgram(toy).inputs
    first, second = example_inputs(specs, seed=4), example_inputs(specs, seed=4)
    other = example_inputs(specs, seed=5)
    assert all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))
    assert not np.array_equal(first[0], other[0])
    assert all(0 <= a.min() and a.max() < 1 for a in first)
