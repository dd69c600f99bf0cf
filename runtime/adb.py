"""A thin, checked wrapper around the `adb` command line for pushing, running and pulling files.

Every failure a user can meet before the runner even starts (no adb, no phone, unauthorized phone, full
disk) becomes a one-line `AdbError` that says what to do, instead of adb's own multi-line output.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from vggt_et.utils.cleanup import run_child

EXIT_MARKER = "VGGT_ET_EXIT="


class AdbError(RuntimeError):
    """adb is missing, the device is not usable, or an adb transfer failed."""


def find_adb(adb: str | None = None) -> str:
    """Path of the adb executable: `adb` argument, $ADB, or `adb` on PATH."""
    candidate = adb or os.environ.get("ADB") or "adb"
    found = shutil.which(candidate)
    if found is None:
        raise AdbError(
            "adb not found on PATH: install Android platform-tools (e.g. apt-get install adb) "
            "or set $ADB to its path"
        )
    return found


def list_devices(adb: str) -> dict[str, str]:
    """Serial -> state ("device", "unauthorized", "offline", ...) as `adb devices` reports them."""
    completed = run_child([adb, "devices"], timeout=60)
    if completed.returncode != 0:
        raise AdbError(f"'adb devices' failed ({completed.returncode}): {completed.stderr.strip()[-300:]}")
    devices = {}
    for line in completed.stdout.splitlines():
        fields = line.split()
        if len(fields) >= 2 and not line.startswith(("List of devices", "*")):
            devices[fields[0]] = fields[1]
    return devices


@dataclass
class AdbDevice:
    """One connected, authorized device, addressed by serial."""

    serial: str
    adb: str

    @classmethod
    def connect(cls, serial: str, adb: str | None = None) -> AdbDevice:
        """Checks that `serial` is attached and usable; raises AdbError naming the fix otherwise."""
        adb_path = find_adb(adb)
        devices = list_devices(adb_path)
        if serial not in devices:
            listed = ", ".join(f"{name} ({state})" for name, state in devices.items()) or "none"
            raise AdbError(
                f"no device with serial '{serial}' (adb devices lists: {listed}); connect it with "
                "USB debugging enabled or pass the right --adb-serial"
            )
        state = devices[serial]
        if state == "unauthorized":
            raise AdbError(
                f"device '{serial}' is unauthorized: unlock it and accept the 'Allow USB debugging' "
                "prompt, then retry"
            )
        if state != "device":
            raise AdbError(f"device '{serial}' is {state}: reconnect it (or 'adb reconnect') and retry")
        return cls(serial, adb_path)

    def _adb(self, *args: str, timeout: float | None = 600) -> subprocess.CompletedProcess:
        return run_child([self.adb, "-s", self.serial, *args], timeout=timeout)

    def shell(self, command: str, *, timeout: float | None = 600) -> tuple[int, str]:
        """Runs `command` with the device's sh; returns (exit code, stdout).

        The exit code is echoed by the command itself, because older adb versions do not forward it.
        """
        completed = self._adb("shell", f"{command}; echo {EXIT_MARKER}$?", timeout=timeout)
        if completed.returncode != 0 and EXIT_MARKER not in completed.stdout:
            raise AdbError(
                f"adb shell on '{self.serial}' failed ({completed.returncode}): "
                f"{(completed.stderr or completed.stdout).strip()[-300:]}"
            )
        output, _, tail = completed.stdout.rpartition(EXIT_MARKER)
        try:
            code = int(tail.strip().splitlines()[0])
        except (IndexError, ValueError):
            raise AdbError(
                f"adb shell on '{self.serial}' returned no exit status; is the device still connected?"
            ) from None
        return code, output

    def check_shell(self, command: str, *, timeout: float | None = 600) -> str:
        """`shell` that raises AdbError on a non-zero exit."""
        code, output = self.shell(command, timeout=timeout)
        if code != 0:
            raise AdbError(
                f"'{command}' failed on '{self.serial}' with exit code {code}: {output.strip()[-300:]}"
            )
        return output

    def push(self, local: str | os.PathLike, remote: str) -> None:
        completed = self._adb("push", os.fspath(local), remote)
        if completed.returncode != 0:
            detail = (completed.stderr or completed.stdout).strip()[-300:]
            raise AdbError(f"adb push {local} -> {remote} failed: {detail}")

    def pull(self, remote: str, local: str | os.PathLike) -> None:
        completed = self._adb("pull", remote, os.fspath(local))
        if completed.returncode != 0:
            raise AdbError(
                f"adb pull {remote} failed: {(completed.stderr or completed.stdout).strip()[-300:]}"
            )

    def free_bytes(self, remote_dir: str) -> int:
        """Bytes available to the filesystem holding `remote_dir` (from `df -k`)."""
        output = self.check_shell(f"df -k {shlex.quote(remote_dir)}")
        rows = [line.split() for line in output.strip().splitlines() if line.strip()]
        for fields in reversed(rows):
            # Filesystem 1K-blocks Used Available Use% Mounted-on; long names may wrap onto their own line.
            numbers = [field for field in fields if field.isdigit()]
            if len(numbers) >= 3:
                return int(numbers[2]) * 1024
        raise AdbError(
            f"cannot read free space of {remote_dir} on '{self.serial}' from df: {output.strip()[-200:]}"
        )


def total_bytes(paths: list[Path]) -> int:
    return sum(path.stat().st_size for path in paths)
