"""Every bad input, through the real console script: exit code 2, exactly one line on stderr that names the
bad value, no traceback, and nothing new or changed anywhere in the case's folder.

Each case gets its own folder holding everything it reads and writes; the folder is listed (names, sizes,
mtimes) before and after the run. The cases run a few at a time: each is a separate process that stops
at its up-front checks, so the whole table costs seconds of CPU per case.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

TINY = ["--preset", "tiny", "--random-weights", "--frames", "2", "--height", "28", "--width", "42"]


@dataclass(frozen=True)
class Case:
    """`args` may hold {dir} (the case's folder) and {pte} (a copy of the tiny depth program in it)."""

    name: str
    args: list[str]
    names: str  # the bad value the one line must name
    setup: Callable[[Path], None] = field(default=lambda d: None)
    read_only: bool = False  # run with the case folder mounted read-only (user + mount namespace)


def _file(name: str, data: bytes = b"x") -> Callable[[Path], None]:
    return lambda d: (d / name).parent.mkdir(parents=True, exist_ok=True) or (d / name).write_bytes(data)


def _folder(name: str, *files: str) -> Callable[[Path], None]:
    def make(d: Path) -> None:
        (d / name).mkdir(parents=True, exist_ok=True)
        for f in files:
            (d / name / f).write_text("mine\n")

    return make


def _images(*names: str) -> Callable[[Path], None]:
    def make(d: Path) -> None:
        rng = np.random.default_rng(0)
        for name in names:
            Image.fromarray(rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)).save(d / name)

    return make


def _checkpoint(name: str, legacy: bool = False, evil: bool = False) -> Callable[[Path], None]:
    def make(d: Path) -> None:
        state: dict = {"w": torch.zeros(2)}
        if evil:
            state["obj"] = Path("x")  # a pickled object, not a tensor
        torch.save(state, d / name, _use_new_zipfile_serialization=not legacy)

    return make


def _both(*setups: Callable[[Path], None]) -> Callable[[Path], None]:
    return lambda d: [s(d) for s in setups] and None


def _scene_folder(name: str) -> Callable[[Path], None]:
    return _folder(name, "notes.txt")  # a folder without any BlendedMVS scene


COMPILE = ["compile", *TINY]
CASES = [
    # 1: no output may be another output or an input
    Case("compile-o-json-replaces-program", [*COMPILE, "-o", "{dir}/m.json"], "m.json"),
    Case("compile-report-equals-output", [*COMPILE, "-o", "{dir}/m.pte", "--report", "{dir}/m.pte"], "m.pte"),
    Case(
        "compile-etrecord-equals-report",
        [*COMPILE, "-o", "{dir}/m.pte", "--report", "{dir}/r.json", "--etrecord", "{dir}/r.json"],
        "r.json",
    ),
    Case(
        "compile-output-is-checkpoint",
        ["compile", "--preset", "tiny", "--checkpoint", "{dir}/c.pt", "-o", "{dir}/c.pt"],
        "c.pt",
        _checkpoint("c.pt"),
    ),
    Case(
        "compile-output-hardlink-of-checkpoint",
        ["compile", "--preset", "tiny", "--checkpoint", "{dir}/c.pt", "-o", "{dir}/link.pte"],
        "link.pte",
        lambda d: (_checkpoint("c.pt")(d), os.link(d / "c.pt", d / "link.pte")) and None,
    ),
    Case("fisher-heatmap-is-output", ["fisher", *TINY, "-o", "{dir}/f.png"], "f.png"),
    Case(
        "audit-json-is-checkpoint",
        ["audit", "--preset", "tiny", "--checkpoint", "{dir}/c.pt", "--json", "{dir}/c.pt"],
        "c.pt",
        _checkpoint("c.pt"),
    ),
    Case("compare-json-is-program", ["compare", "{pte}", "--random-weights", "--json", "{pte}"], "--json"),
    Case("bench-json-is-program", ["bench", "{pte}", "--host", "--json", "{pte}"], "--json"),
    # 2: -o naming an existing folder
    Case("compile-o-existing-folder", [*COMPILE, "-o", "{dir}/outdir"], "outdir", _folder("outdir")),
    # 3: run / demo -o naming a file, or a read-only file system
    Case("run-o-existing-file", ["run", "{pte}", "-o", "{dir}/afile"], "afile", _file("afile")),
    Case("demo-o-existing-file", ["demo", "-o", "{dir}/afile"], "afile", _file("afile")),
    Case("run-o-read-only", ["run", "{pte}", "-o", "{dir}/runout"], "runout", read_only=True),
    Case("compile-o-read-only", [*COMPILE, "-o", "{dir}/m.pte"], "m.pte", read_only=True),
    # 4: compare --against that is not a LiteRT model
    Case("compare-against-missing", ["compare", "{pte}", "--against", "{dir}/no.tflite"], "no.tflite"),
    Case("compare-against-folder", ["compare", "{pte}", "--against", "{dir}/adir"], "adir", _folder("adir")),
    Case("compare-against-not-tflite", ["compare", "{pte}", "--against", "{pte}"], "not a LiteRT model"),
    # 5: checkpoints that are not plain tensors, or not checkpoints
    Case(
        "compile-checkpoint-pickled-object",
        ["compile", "--preset", "tiny", "--checkpoint", "{dir}/evil.pt", "-o", "{dir}/m.pte"],
        "evil.pt",
        _checkpoint("evil.pt", legacy=True, evil=True),
    ),
    Case(
        "compile-checkpoint-garbage",
        ["compile", "--preset", "tiny", "--checkpoint", "{dir}/junk.bin", "-o", "{dir}/m.pte"],
        "junk.bin",
        _file("junk.bin", b"\x00\x01garbage" * 10),
    ),
    Case(
        "compile-checkpoint-wrong-model",
        ["compile", "--preset", "tiny", "--checkpoint", "{dir}/c.pt", "-o", "{dir}/m.pte"],
        "c.pt",
        _checkpoint("c.pt", legacy=True),  # loads (legacy format), but holds another model's tensors
    ),
    # 7: intrinsics
    Case("run-intrinsics-zero-fx", ["run", "{pte}", "--intrinsics", "0,20,21,14", "-o", "{dir}/o"], "0,20"),
    Case(
        "run-intrinsics-negative-fy", ["run", "{pte}", "--intrinsics", "20,-3,21,14", "-o", "{dir}/o"], "-3"
    ),
    Case("run-intrinsics-nan", ["run", "{pte}", "--intrinsics", "20,20,nan,14", "-o", "{dir}/o"], "nan"),
    Case(
        "run-intrinsics-three-numbers",
        ["run", "{pte}", "--intrinsics", "20,20,21", "-o", "{dir}/o"],
        "20,20,21",
    ),
    # 8: a folder vggt-et did not write
    Case(
        "run-into-foreign-folder", ["run", "{pte}", "-o", "{dir}/o"], "notes.txt", _folder("o", "notes.txt")
    ),
    Case("demo-into-foreign-folder", ["demo", "-o", "{dir}/o"], "notes.txt", _folder("o", "notes.txt")),
    # 9 and image inputs
    Case(
        "run-images-missing",
        ["run", "{pte}", "--images", "{dir}/a.jpg", "{dir}/nope.jpg", "-o", "{dir}/o"],
        "nope.jpg",
        _images("a.jpg"),
    ),
    Case(
        "run-images-count",
        ["run", "{pte}", "--images", "{dir}/a.jpg", "-o", "{dir}/o"],
        "got 1",
        _images("a.jpg"),
    ),
    Case(
        "run-model-not-a-program",
        ["run", "{dir}/x.pte", "-o", "{dir}/o"],
        "x.pte is not a vggt-et program",
        _file("x.pte"),
    ),
    # 10: every path and count before the first heavy stage
    Case(
        "compile-etrecord-missing-folder",
        [*COMPILE, "-o", "{dir}/m.pte", "--etrecord", "{dir}/nofolder/e.etr"],
        "nofolder",
    ),
    Case(
        "compile-calib-missing",
        [*COMPILE, "--quant", "int8", "--calib-data", "{dir}/noscenes", "-o", "{dir}/m.pte"],
        "noscenes",
    ),
    Case(
        "compile-calib-empty",
        [*COMPILE, "--quant", "int8", "--calib-data", "{dir}/emptyscenes", "-o", "{dir}/m.pte"],
        "emptyscenes",
        _scene_folder("emptyscenes"),
    ),
    Case(
        "compile-calib-samples-zero",
        [*COMPILE, "--quant", "int8", "--calib-samples", "0", "-o", "{dir}/m.pte"],
        "got 0",
    ),
    Case("fisher-calib-samples-zero", ["fisher", *TINY, "--calib-samples", "0", "-o", "{dir}/f.pt"], "got 0"),
    Case("audit-json-missing-folder", ["audit", *TINY, "--json", "{dir}/nofolder/a.json"], "nofolder"),
    Case(
        "compile-fisher-missing",
        [*COMPILE, "--quant", "w4-fisher", "--fisher", "{dir}/f.pt", "-o", "{dir}/m.pte"],
        "f.pt",
    ),
    # 11 and 13: flags the scheme or backend does not use are refused
    Case(
        "compile-calib-data-with-fp32",
        [*COMPILE, "--calib-data", "{dir}/e", "-o", "{dir}/m.pte"],
        "--calib-data",
        _scene_folder("e"),
    ),
    Case(
        "compile-calib-samples-with-fp16",
        [*COMPILE, "--quant", "fp16", "--calib-samples", "4", "-o", "{dir}/m.pte"],
        "--calib-samples",
    ),
    Case(
        "compile-group-size-with-fp32",
        [*COMPILE, "--w4-group-size", "64", "-o", "{dir}/m.pte"],
        "--w4-group-size",
    ),
    Case("compile-soc-with-xnnpack", [*COMPILE, "--soc", "SM8650", "-o", "{dir}/m.pte"], "--soc"),
    Case(
        "compile-etrecord-without-lowering",
        [*COMPILE, "--stop-before-lowering", "--etrecord", "{dir}/e", "-o", "{dir}/m.pt2"],
        "--etrecord",
    ),
    Case(
        "compile-tflite-int8",
        [*COMPILE, "--backend", "tflite", "--quant", "int8", "-o", "{dir}/m.tflite"],
        "tflite",
    ),
    # 14: the cosmetic ones, which must still be one line
    Case("compile-missing-output", COMPILE, "--output"),
    Case("compile-unknown-flag", [*COMPILE, "--bogus", "-o", "{dir}/m.pte"], "--bogus"),
    Case("compile-o-under-a-file", [*COMPILE, "-o", "{dir}/afile/o.pte"], "afile is a file", _file("afile")),
    Case(
        "compile-checkpoint-folder",
        ["compile", "--preset", "tiny", "--checkpoint", "{dir}/ckdir", "-o", "{dir}/m.pte"],
        "ckdir is a folder",
        _folder("ckdir"),
    ),
    Case(
        "compile-height-not-multiple",
        ["compile", "--preset", "tiny", "--random-weights", "--height", "30", "-o", "{dir}/m.pte"],
        "30",
    ),
    Case("compare-preset-mismatch", ["compare", "{pte}", "--preset", "small", "--random-weights"], "small"),
    Case("bench-neither-host-nor-adb", ["bench", "{pte}"], "--host"),
    Case("bench-zero-iters", ["bench", "{pte}", "--host", "--iters", "0"], "iters=0"),
    Case("unknown-command", ["nothing"], "nothing"),
]


def _listing(folder: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(folder)): (p.lstat().st_size, p.lstat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
    }


def _run(case: Case, root: Path, cli: list[str], pte: Path) -> tuple[subprocess.CompletedProcess, dict, dict]:
    folder = root / case.name
    folder.mkdir()
    shutil.copy(pte, folder / "tiny.pte")
    case.setup(folder)
    args = [a.format(dir=folder, pte=folder / "tiny.pte") for a in case.args]
    command = [*cli, *args]
    if case.read_only:  # as root, permissions do not stop writes: a read-only bind mount does
        script = 'mount -o bind,ro "$0" "$0" && exec "$@"'
        command = ["unshare", "-rm", "sh", "-c", script, str(folder), *command]
    before = _listing(folder)
    env = {**os.environ, "VGGT_ET_DEBUG": ""}
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, cwd=folder)
    return done, before, _listing(folder)


@pytest.fixture(scope="module")
def results(tmp_path_factory, vggt_et_cli, tiny_depth_pte) -> dict[str, tuple]:
    root = tmp_path_factory.mktemp("cli_errors")
    with ThreadPoolExecutor(max_workers=3) as pool:
        futures = {c.name: pool.submit(_run, c, root, vggt_et_cli, tiny_depth_pte) for c in CASES}
        return {name: future.result() for name, future in futures.items()}


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_bad_input_is_one_line_exit_2_and_touches_nothing(case: Case, results) -> None:
    done, before, after = results[case.name]
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2, (done.returncode, done.stderr[-1500:])
    assert "Traceback" not in done.stderr
    assert len(lines) == 1, done.stderr
    assert case.names in lines[0], lines[0]
    assert after == before, "the output folder changed"
