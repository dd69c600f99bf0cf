"""`vggt_et.runtime.bench` end to end over a fake `adb` that maps the device's /data/local/tmp onto a temp
folder and runs `adb shell` commands there, so every step but the USB cable runs: device checks, free-space
check, push, chmod, run, exit-status handling, pull, comparison with the Python runtime. Variants of the
fake cover the errors a user meets: no adb, no device, unauthorized or offline device, full disk, crash.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import pytest

from vggt_et.runtime.adb import AdbError
from vggt_et.runtime.bench import REMOTE_ROOT, BenchError, bench_command, format_report, run_bench

SERIAL = "FAKE0001"

FAKE_ADB = r'''#!{python}
"""Fake adb: the device filesystem is $FAKE_ADB_ROOT; commands are logged to $FAKE_ADB_ROOT/adb.log."""
import os, shutil, subprocess, sys

root = os.environ["FAKE_ADB_ROOT"]
state = os.environ.get("FAKE_ADB_STATE", "device")
args = sys.argv[1:]
with open(os.path.join(root, "adb.log"), "a") as log:
    log.write(" ".join(args) + "\n")
serial = None
if args[:1] == ["-s"]:
    serial, args = args[1], args[2:]

def local(path):
    return root + path if path.startswith("/") else path

if args == ["devices"]:
    print("List of devices attached")
    if state != "none":
        print("{serial}\t" + state)
    print()
    sys.exit(0)
if serial != "{serial}" or state != "device":
    print(f"adb: device '{{serial}}' not found", file=sys.stderr)
    sys.exit(1)
if args[0] == "push":
    source, target = args[1], local(args[2])
    os.makedirs(os.path.dirname(target), exist_ok=True)
    shutil.copy(source, target)
    print(f"{{source}}: 1 file pushed")
elif args[0] == "pull":
    shutil.copy(local(args[1]), args[2])
    print(f"{{args[1]}}: 1 file pulled")
elif args[0] == "shell":
    command = " ".join(args[1:])
    free_kb = os.environ.get("FAKE_ADB_FREE_KB")
    if command.startswith("df ") and free_kb is not None:
        header = "'Filesystem 1K-blocks Used Available Use% Mounted on'"
        row = "'/dev/block/dm-5 1000000 900000 " + free_kb + " 90% /data'"
        command = "printf '%s\\n' " + header + " " + row + command[command.index(";"):]
    command = command.replace("/data/local/tmp", root + "/data/local/tmp")
    sys.exit(subprocess.run(["sh", "-c", command], cwd=root).returncode)
else:
    print("fake adb: unsupported " + " ".join(args), file=sys.stderr)
    sys.exit(1)
'''


@pytest.fixture()
def device_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fake adb first on PATH, with an empty "device" folder."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    adb = bin_dir / "adb"
    adb.write_text(FAKE_ADB.format(python=sys.executable, serial=SERIAL))
    adb.chmod(adb.stat().st_mode | stat.S_IXUSR)
    root = tmp_path / "device"
    (root / "data/local/tmp").mkdir(parents=True)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_ADB_ROOT", str(root))
    monkeypatch.delenv("ADB", raising=False)
    return root


def adb_log(root: Path) -> list[str]:
    return (root / "adb.log").read_text().splitlines()


def test_adb_bench_end_to_end(runner: Path, toy: Path, device_root: Path, tmp_path: Path) -> None:
    lines: list[str] = []
    json_file = tmp_path / "bench.json"
    report = bench_command(
        str(toy),
        False,
        SERIAL,
        runner=str(runner),
        iters=4,
        threads=2,
        json_path=str(json_file),
        echo=lines.append,
    )
    remote = device_root / REMOTE_ROOT.lstrip("/")
    assert (remote / "vggt_et_runner").is_file() and (remote / "model.pte").read_bytes() == toy.read_bytes()
    assert (remote / "libexecutorch.so").is_file(), "the runner's shared libraries must be pushed with it"
    assert sorted(p.name for p in (remote / "run/out").iterdir()) == ["output_0.npy", "output_1.npy"]
    assert (remote / "run/weights.xnncache").stat().st_size > 0, "the priming run writes the packed weights"
    assert report["weight_cache"] and report["first_load_ms"] > 0
    log = adb_log(device_root)
    assert log[0] == "devices" and all(line.startswith(f"-s {SERIAL} ") for line in log[1:])
    assert any(" push " in f" {line} " and "vggt_et_runner" in line for line in log)
    assert any(" pull " in f" {line} " and "output_1.npy" in line for line in log)
    assert report["where"] == f"adb:{SERIAL}" and report["iters"] == 4 and report["threads"] == 2
    assert report["check"]["ok"] and all(c["max_abs"] == 0.0 for c in report["check"]["outputs"])
    assert json.loads(json_file.read_text()) == report
    assert not list(tmp_path.glob("*.part"))
    assert "outputs match" in lines[-1] and "adb:FAKE0001" in lines[-1]


def test_unchanged_program_is_not_pushed_again(runner: Path, toy: Path, device_root: Path) -> None:
    lines: list[str] = []
    run_bench(toy, adb_serial=SERIAL, runner=runner, iters=1, weight_cache=False, echo=lines.append)
    pushes = [line for line in adb_log(device_root) if " push " in f" {line} " and line.endswith("model.pte")]
    assert len(pushes) == 1
    report = run_bench(toy, adb_serial=SERIAL, runner=runner, iters=1, weight_cache=False, echo=lines.append)
    pushes = [line for line in adb_log(device_root) if " push " in f" {line} " and line.endswith("model.pte")]
    assert len(pushes) == 1 and any("not pushing it again" in line for line in lines)
    assert report["check"]["ok"] and report["first_load_ms"] is None


@pytest.mark.parametrize("weight_cache", [True, False])
def test_host_bench(runner: Path, toy: Path, weight_cache: bool) -> None:
    report = run_bench(toy, runner=runner, iters=3, threads=1, weight_cache=weight_cache, echo=lambda _: None)
    assert (report["first_load_ms"] is not None) == weight_cache
    assert report["where"] == "host" and report["threads"] == 1 and len(report["samples_ms"]) == 3
    assert report["check"]["ok"]
    latency = report["latency_ms"]
    assert latency["min"] <= latency["median"] <= latency["p90"] <= latency["max"]
    table = format_report(report)
    assert "peak RSS / program" in table and "output 1 vs Python" in table


def test_exactly_one_target(toy: Path) -> None:
    with pytest.raises(BenchError, match="exactly one of --host and --adb-serial"):
        bench_command(str(toy), True, SERIAL)
    with pytest.raises(BenchError, match="exactly one of --host and --adb-serial"):
        bench_command(str(toy), False, None)


def test_no_adb_on_path(runner: Path, toy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("ADB", raising=False)
    with pytest.raises(AdbError, match="adb not found on PATH"):
        run_bench(toy, adb_serial=SERIAL, runner=runner, echo=lambda _: None)


@pytest.mark.parametrize(
    ("state", "message"),
    [
        ("none", "no device with serial 'FAKE0001' \\(adb devices lists: none\\)"),
        ("unauthorized", "unauthorized: unlock it and accept"),
        ("offline", "is offline: reconnect it"),
    ],
)
def test_unusable_device(
    runner: Path, toy: Path, device_root: Path, monkeypatch: pytest.MonkeyPatch, state: str, message: str
) -> None:
    monkeypatch.setenv("FAKE_ADB_STATE", state)
    with pytest.raises(AdbError, match=message):
        run_bench(toy, adb_serial=SERIAL, runner=runner, echo=lambda _: None)
    assert not any(" push " in f" {line} " for line in adb_log(device_root))


def test_other_serial_is_named(runner: Path, toy: Path, device_root: Path) -> None:
    with pytest.raises(AdbError, match="lists: FAKE0001 \\(device\\)"):
        run_bench(toy, adb_serial="OTHER", runner=runner, echo=lambda _: None)


def test_not_enough_space(
    runner: Path, toy: Path, device_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_ADB_FREE_KB", "100")
    with pytest.raises(BenchError, match="not enough space on device 'FAKE0001'.*0.1 MB free"):
        run_bench(toy, adb_serial=SERIAL, runner=runner, echo=lambda _: None)
    assert not any(" push " in f" {line} " for line in adb_log(device_root))


def crashing_runner(tmp_path: Path, body: str) -> Path:
    script = tmp_path / "vggt_et_runner"
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(0o755)
    return script


def test_runner_crash_reports_signal_and_log(toy: Path, device_root: Path, tmp_path: Path) -> None:
    runner = crashing_runner(tmp_path, 'echo "loading model.pte"\necho "about to fault" >&2\nkill -SEGV $$\n')
    with pytest.raises(BenchError) as caught:
        run_bench(toy, adb_serial=SERIAL, runner=runner, echo=lambda _: None)
    text = str(caught.value)
    assert (
        "crashed with signal 11 (SIGSEGV)" in text
        and "about to fault" in text
        and "loading model.pte" in text
    )


def test_runner_error_exit_reports_code_and_log(toy: Path, device_root: Path, tmp_path: Path) -> None:
    runner = crashing_runner(tmp_path, 'echo "error: cannot load method forward" >&2\nexit 1\n')
    with pytest.raises(BenchError, match="exited with code 1(.|\n)*error: cannot load method forward"):
        run_bench(toy, adb_serial=SERIAL, runner=runner, echo=lambda _: None)


def test_host_runner_crash(toy: Path, tmp_path: Path) -> None:
    runner = crashing_runner(tmp_path, 'echo "oops" >&2\nkill -ABRT $$\n')
    with pytest.raises(BenchError, match="crashed with signal 6 \\(SIGABRT\\)(.|\n)*oops"):
        run_bench(toy, runner=runner, echo=lambda _: None)


def test_missing_runner(toy: Path, tmp_path: Path) -> None:
    with pytest.raises(BenchError, match="does not exist: build it with android_runner/ci_build.sh host"):
        run_bench(toy, runner=tmp_path / "absent", echo=lambda _: None)
