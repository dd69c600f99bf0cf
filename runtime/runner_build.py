"""Build the C++ runner from Python (tests, benchmarks, `vggt-et bench`) through android_runner/ci_build.sh.

The script is the single description of how to build; it reuses android_runner/build-<preset>, so calling
this again only recompiles what changed.
"""

from __future__ import annotations

from pathlib import Path

from vggt_et.utils.cleanup import run_child

RUNNER_DIR = Path(__file__).resolve().parent.parent / "android_runner"
BUILD_SCRIPT = RUNNER_DIR / "ci_build.sh"

# Running the aarch64 runner on an x86 host. SME off: under qemu 7.2 (Debian 12) XNNPACK picks SME kernels
# whose int8 results are 26 % off; with SME disabled (SVE2, i8mm, dot-product still on) they equal x86.
QEMU_AARCH64 = ("qemu-aarch64", "-cpu", "max,sme=off", "-L", "/usr/aarch64-linux-gnu")


class RunnerBuildError(RuntimeError):
    """The runner could not be configured or compiled; the message carries the tail of the build log."""


def build_runner(preset: str = "host", *, timeout: float = 1800.0) -> Path:
    """Builds (or brings up to date) the runner for `preset`; returns the executable's path."""
    if not BUILD_SCRIPT.is_file():
        raise RunnerBuildError(f"{BUILD_SCRIPT} is missing: run from a checkout of vggt-et")
    completed = run_child(["bash", str(BUILD_SCRIPT), preset], timeout=timeout)
    if completed.returncode != 0:
        tail = "\n".join((completed.stderr + completed.stdout).strip().splitlines()[-25:])
        raise RunnerBuildError(f"building the {preset} runner failed (exit {completed.returncode}):\n{tail}")
    runner = Path(completed.stdout.strip().splitlines()[-1])
    if not runner.is_file():
        raise RunnerBuildError(f"the {preset} build reported {runner}, which does not exist")
    return runner
