"""Temporary paths and child programs are undone on every exit, a signal included (vggt_et.utils.cleanup)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from vggt_et.utils.cleanup import live_children, live_paths, run_child, temporary, undo_all
from vggt_et.utils.files import atomic_output_path


def test_atomic_output_is_listed_while_written_and_unlisted_after(tmp_path) -> None:
    target = tmp_path / "out.bin"
    with atomic_output_path(target) as tmp:
        assert tmp in live_paths()
        tmp.write_bytes(b"done")
    assert target.read_bytes() == b"done"
    assert tmp not in live_paths() and not tmp.exists()


def test_failed_write_removes_its_temporary_and_unlists_it(tmp_path) -> None:
    with pytest.raises(RuntimeError), atomic_output_path(tmp_path / "out.bin") as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("writer failed")
    assert list(tmp_path.iterdir()) == []
    assert tmp not in live_paths()


def test_undo_all_removes_files_and_folders(tmp_path) -> None:
    folder = tmp_path / "scratch"
    (folder / "deep").mkdir(parents=True)
    (folder / "deep" / "blob.bin").write_bytes(b"x")
    file = tmp_path / "part.tmp"
    file.write_bytes(b"y")
    with temporary(folder), temporary(file):
        assert undo_all() == ([file, folder], 0)  # newest first
        assert live_paths() == []
    assert list(tmp_path.iterdir()) == []


_SWALLOWING_CHILD = """
    import sys, time
    from pathlib import Path
    import vggt_et.cli as cli
    from vggt_et.utils.files import atomic_output_path
    from vggt_et.utils.cleanup import temporary

    cli._exit_cleanly_on_signals()
    out = Path(sys.argv[1])
    scratch = out / ".scratch"
    scratch.mkdir()
    with temporary(scratch), atomic_output_path(out / "result.pte") as tmp:
        tmp.write_bytes(b"partial")
        (scratch / "blob.bin").write_bytes(b"x")
        try:  # what the lowering did in CI: a broad handler that swallows the signal's exception
            print("ready", flush=True)
            while True:
                time.sleep(0.01)
        except BaseException:
            pass
        print("carried on", flush=True)
"""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_removes_temporaries_even_when_the_stack_swallows_exceptions(tmp_path, signum) -> None:
    out = tmp_path / "out"
    out.mkdir()
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(_SWALLOWING_CHILD), str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stdout.readline().strip() == "ready", child.stderr.read()
    child.send_signal(signum)
    stdout, stderr = child.communicate(timeout=60)
    assert child.returncode == 128 + signum, stderr
    assert "carried on" not in stdout
    assert f"stopped by signal {signum}" in stderr
    assert list(out.iterdir()) == []


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()


def test_run_child_captures_like_subprocess_run() -> None:
    done = run_child(["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert (done.returncode, done.stdout, done.stderr) == (3, "out\n", "err\n")
    assert live_children() == []


def test_run_child_timeout_kills_what_the_child_started(tmp_path) -> None:
    pid_file = tmp_path / "grandchild.pid"
    with pytest.raises(subprocess.TimeoutExpired):
        run_child(["sh", "-c", f"sleep 60 & echo $! > {pid_file}; wait"], timeout=1)
    assert live_children() == []
    grandchild = int(pid_file.read_text())
    time.sleep(0.2)
    assert not _alive(grandchild)


_CHILD_STARTING_A_PROGRAM = """
    import sys
    import vggt_et.cli as cli
    from vggt_et.utils.cleanup import run_child

    cli._exit_cleanly_on_signals()
    run_child(["sh", "-c", f"sleep 60 & echo $! > {sys.argv[1]}; wait"])
"""


def test_signal_stops_the_programs_a_run_started(tmp_path) -> None:
    pid_file = tmp_path / "grandchild.pid"
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(_CHILD_STARTING_A_PROGRAM), str(pid_file)],
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not (pid_file.is_file() and pid_file.read_text().strip()):
        assert child.poll() is None and time.monotonic() < deadline, "the child never started its program"
        time.sleep(0.05)
    grandchild = int(pid_file.read_text())
    assert _alive(grandchild)
    child.send_signal(signal.SIGTERM)
    _, stderr = child.communicate(timeout=60)
    assert child.returncode == 143, stderr
    time.sleep(0.2)
    assert not _alive(grandchild)
