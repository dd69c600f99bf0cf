"""The host-built C++ runner against ExecuTorch's Python runtime on the same XNNPACK programs."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from toy_runtime import cached_toy_pte

from vggt_et.runtime.program import PteProgram, example_inputs


@pytest.fixture(scope="module", params=["fp32", "int8"])
def toy(request) -> Path:
    return cached_toy_pte(request.param)


def run_runner(runner: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(runner), *args], capture_output=True, text=True, errors="replace", timeout=300)


def stats_line(completed: subprocess.CompletedProcess) -> dict:
    assert completed.returncode == 0, completed.stderr[-2000:]
    return json.loads(completed.stdout.strip().splitlines()[-1])


def save_inputs(program: PteProgram, directory: Path, seed: int = 3) -> tuple[list[np.ndarray], list[str]]:
    arrays = example_inputs(program.inputs, seed)
    paths = []
    for index, array in enumerate(arrays):
        paths.append(str(directory / f"input_{index}.npy"))
        np.save(paths[-1], array)
    return arrays, paths


def input_flags(paths: list[str]) -> list[str]:
    return [flag for path in paths for flag in ("--input", path)]


def test_outputs_equal_python_runtime(runner: Path, toy: Path, tmp_path: Path) -> None:
    program = PteProgram(toy)
    arrays, paths = save_inputs(program, tmp_path)
    expected = program.run(arrays)
    stats = stats_line(
        run_runner(
            runner,
            "--model",
            str(toy),
            *input_flags(paths),
            "--output-dir",
            str(tmp_path),
            "--iters",
            "3",
            "--threads",
            "2",
        )
    )
    assert len(stats["outputs"]) == len(expected) == 2
    for index, want in enumerate(expected):
        got = np.load(tmp_path / f"output_{index}.npy")
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
        assert stats["outputs"][index]["shape"] == list(want.shape)


def test_stats_line_follows_the_bench_contract(runner: Path, toy: Path, tmp_path: Path) -> None:
    program = PteProgram(toy)
    _, paths = save_inputs(program, tmp_path)
    json_file = tmp_path / "stats.json"
    stats = stats_line(
        run_runner(
            runner,
            "--model",
            str(toy),
            *input_flags(paths),
            "--iters",
            "7",
            "--warmup",
            "2",
            "--threads",
            "1",
            "--json",
            str(json_file),
        )
    )
    assert json.loads(json_file.read_text()) == stats
    assert {"where", "iters", "threads", "load_ms", "latency_ms", "peak_rss_bytes"} <= stats.keys()
    assert stats["iters"] == 7 and len(stats["samples_ms"]) == 7 and stats["threads"] == 1
    latency = stats["latency_ms"]
    assert 0 < latency["min"] <= latency["median"] <= latency["p90"] <= latency["max"]
    assert latency["min"] == pytest.approx(min(stats["samples_ms"]), abs=1e-5)
    assert latency["median"] == pytest.approx(float(np.median(stats["samples_ms"])), abs=1e-5)
    assert latency["p90"] == pytest.approx(float(np.percentile(stats["samples_ms"], 90)), abs=1e-5)
    assert stats["load_ms"] > 0
    assert 1 << 20 < stats["peak_rss_bytes"] < 1 << 30
    assert stats["pte_bytes"] == toy.stat().st_size


def test_print_meta_matches_python_method_meta(runner: Path, toy: Path) -> None:
    meta = stats_line(run_runner(runner, "--model", str(toy), "--print-meta"))
    program = PteProgram(toy)
    assert [tuple(entry["shape"]) for entry in meta["inputs"]] == [spec.shape for spec in program.inputs]
    assert [tuple(entry["shape"]) for entry in meta["outputs"]] == [spec.shape for spec in program.outputs]
    assert [entry["nbytes"] for entry in meta["inputs"]] == [spec.nbytes for spec in program.inputs]
    assert {entry["dtype"] for entry in meta["inputs"] + meta["outputs"]} == {"float32"}


def test_raw_inputs_and_raw_outputs(runner: Path, toy: Path, tmp_path: Path) -> None:
    program = PteProgram(toy)
    arrays = example_inputs(program.inputs, seed=5)
    paths = []
    for index, array in enumerate(arrays):
        paths.append(str(tmp_path / f"input_{index}.bin"))
        array.tofile(paths[-1])
    stats_line(
        run_runner(
            runner,
            "--model",
            str(toy),
            *input_flags(paths),
            "--output-dir",
            str(tmp_path),
            "--output-format",
            "raw",
            "--iters",
            "1",
            "--warmup",
            "0",
        )
    )
    for index, want in enumerate(program.run(arrays)):
        got = np.fromfile(tmp_path / f"output_{index}.bin", dtype=want.dtype).reshape(want.shape)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


def test_file_load_mode_gives_the_same_outputs(runner: Path, toy: Path, tmp_path: Path) -> None:
    program = PteProgram(toy)
    arrays, paths = save_inputs(program, tmp_path)
    stats_line(
        run_runner(
            runner,
            "--model",
            str(toy),
            *input_flags(paths),
            "--output-dir",
            str(tmp_path),
            "--load-mode",
            "file",
            "--iters",
            "1",
        )
    )
    for index, want in enumerate(program.run(arrays)):
        np.testing.assert_allclose(np.load(tmp_path / f"output_{index}.npy"), want, rtol=0, atol=1e-6)


def test_etdump_is_written_and_readable(runner: Path, toy: Path, tmp_path: Path) -> None:
    program = PteProgram(toy)
    _, paths = save_inputs(program, tmp_path)
    etdump = tmp_path / "run.etdp"
    stats_line(
        run_runner(runner, "--model", str(toy), *input_flags(paths), "--iters", "2", "--etdump", str(etdump))
    )
    from executorch.devtools import Inspector

    inspector = Inspector(etdump_path=str(etdump))
    assert len(inspector.event_blocks) >= 1
    assert sum(len(block.events) for block in inspector.event_blocks) > 0


def test_xnnpack_weight_cache_is_written_then_reused(runner: Path, toy: Path, tmp_path: Path) -> None:
    program = PteProgram(toy)
    arrays, paths = save_inputs(program, tmp_path)
    cache = tmp_path / "weights.xnncache"
    expected = program.run(arrays)
    for attempt in range(2):
        out = tmp_path / f"run{attempt}"
        out.mkdir()
        stats_line(
            run_runner(
                runner,
                "--model",
                str(toy),
                *input_flags(paths),
                "--output-dir",
                str(out),
                "--xnnpack-cache",
                str(cache),
                "--iters",
                "1",
            )
        )
        if attempt == 0:
            written = cache.stat()
            assert written.st_size > 0
        for index, want in enumerate(expected):
            np.testing.assert_allclose(np.load(out / f"output_{index}.npy"), want, rtol=0, atol=1e-6)
    assert cache.stat().st_mtime_ns == written.st_mtime_ns, (
        "the second run must read the cache, not rewrite it"
    )
