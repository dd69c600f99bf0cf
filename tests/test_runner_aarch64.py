"""The runner cross-built for aarch64 (Debian's cross g++, the aarch64 executorch wheel) runs under
qemu-user and matches ExecuTorch's Python runtime on this host.

Needs `g++-aarch64-linux-gnu` and `qemu-user` (apt) and, the first time, PyPI access to fetch the aarch64
wheel into ~/.cache/vggt-et. About 15 s once the toy programs are cached, so it runs in the fast tier.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from toy_runtime import cached_toy_pte

from vggt_et.runtime.program import PteProgram, example_inputs
from vggt_et.runtime.runner_build import QEMU_AARCH64, build_runner

QEMU = list(QEMU_AARCH64)


@pytest.fixture(scope="module")
def aarch64_runner() -> Path:
    missing = [tool for tool in ("aarch64-linux-gnu-g++", "qemu-aarch64") if shutil.which(tool) is None]
    assert not missing, f"{missing} not installed: apt-get install g++-aarch64-linux-gnu qemu-user"
    return build_runner("aarch64-linux")


def read_elf_machine(path: Path) -> int:
    header = path.read_bytes()[:20]
    assert header[:4] == b"\x7fELF"
    return int.from_bytes(header[18:20], "little")


@pytest.mark.parametrize("quant", ["fp32", "int8"])
def test_qemu_outputs_match_python_runtime(aarch64_runner: Path, quant: str, tmp_path: Path) -> None:
    assert read_elf_machine(aarch64_runner) == 183  # EM_AARCH64: really a cross build
    toy = cached_toy_pte(quant)
    program = PteProgram(toy)
    arrays = example_inputs(program.inputs, seed=11)
    args = ["--model", str(toy), "--output-dir", str(tmp_path), "--iters", "2", "--threads", "1"]
    for index, array in enumerate(arrays):
        np.save(tmp_path / f"input_{index}.npy", array)
        args += ["--input", str(tmp_path / f"input_{index}.npy")]
    completed = subprocess.run(
        [*QEMU, str(aarch64_runner), *args], capture_output=True, text=True, errors="replace", timeout=600
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    stats = json.loads(completed.stdout.strip().splitlines()[-1])
    assert stats["where"] == "linux-aarch64" and stats["iters"] == 2
    for index, want in enumerate(program.run(arrays)):
        got = np.load(tmp_path / f"output_{index}.npy")
        assert got.shape == want.shape
        # NEON and AVX kernels may sum in different orders: equal up to float rounding (measured: identical).
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_qemu_runner_rejects_a_truncated_program(aarch64_runner: Path, tmp_path: Path) -> None:
    toy = cached_toy_pte("fp32")
    truncated = tmp_path / "cut.pte"
    truncated.write_bytes(toy.read_bytes()[:5000])
    completed = subprocess.run(
        [*QEMU, str(aarch64_runner), "--model", str(truncated), "--print-meta"],
        capture_output=True,
        text=True,
        errors="replace",
        timeout=300,
    )
    assert completed.returncode == 2
    assert "error: cannot load program" in completed.stderr
