"""Temporary files are listed while alive and removed on every exit, a signal included (vggt_et.temporaries)."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

import pytest

from vggt_et.data.atomic import atomic_output_path
from vggt_et.temporaries import live, remove_all_live, temporary


def test_atomic_output_is_listed_while_written_and_unlisted_after(tmp_path) -> None:
    target = tmp_path / "out.bin"
    with atomic_output_path(target) as tmp:
        assert tmp in live()
        tmp.write_bytes(b"done")
    assert target.read_bytes() == b"done"
    assert tmp not in live() and not tmp.exists()


def test_failed_write_removes_its_temporary_and_unlists_it(tmp_path) -> None:
    with pytest.raises(RuntimeError), atomic_output_path(tmp_path / "out.bin") as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("writer failed")
    assert list(tmp_path.iterdir()) == []
    assert tmp not in live()


def test_remove_all_live_removes_files_and_folders(tmp_path) -> None:
    folder = tmp_path / "scratch"
    (folder / "deep").mkdir(parents=True)
    (folder / "deep" / "blob.bin").write_bytes(b"x")
    file = tmp_path / "part.tmp"
    file.write_bytes(b"y")
    with temporary(folder), temporary(file):
        assert remove_all_live() == [file, folder]  # newest first
        assert live() == []
    assert list(tmp_path.iterdir()) == []


_SWALLOWING_CHILD = """
    import sys, time
    from pathlib import Path
    import vggt_et.cli as cli
    from vggt_et.data.atomic import atomic_output_path
    from vggt_et.temporaries import temporary

    cli._exit_cleanly_on_sigterm()
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
