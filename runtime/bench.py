"""Benchmark a `.pte` with the C++ runner on this host or on a phone over adb, and check its outputs.

The flow is the same in both places: write deterministic inputs as .npy, (push runner + its libraries +
program + inputs to /data/local/tmp/vggt-et), run the runner, (pull) its JSON line and outputs, then compare
the outputs with ExecuTorch's Python runtime on this host. The report keeps the bench contract keys of
ARCHITECTURE.md (`where, iters, threads, load_ms, latency_ms{min,median,p90,max}, peak_rss_bytes`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import signal
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vggt_et.runtime.adb import AdbDevice, AdbError, total_bytes
from vggt_et.runtime.program import ProgramError, PteProgram, example_inputs, method_for_shapes
from vggt_et.utils.cleanup import run_child
from vggt_et.utils.files import write_json
from vggt_et.utils.tables import format_table

REMOTE_ROOT = "/data/local/tmp/vggt-et"
RUNNER_NAME = "vggt_et_runner"
REPO_RUNNER_DIR = Path(__file__).resolve().parent.parent / "android_runner"
# Outputs agree when rel. L2 error is below this: bit-exact on the same host, within float reordering
# (different SIMD kernels) on another CPU.
DEFAULT_TOLERANCE = 1e-4
SPACE_MARGIN = 1.1


class BenchError(RuntimeError):
    """The benchmark could not run or the runner failed; one line (plus the runner's log tail)."""


@dataclass(frozen=True)
class OutputCheck:
    index: int
    shape: tuple[int, ...]
    max_abs: float
    rel_l2: float


def default_runner(adb: bool) -> Path:
    """The runner this repository builds: android-arm64-v8a for adb, host otherwise."""
    preset = "android-arm64-v8a" if adb else "host"
    return REPO_RUNNER_DIR / f"build-{preset}" / RUNNER_NAME


def _resolve_runner(runner: str | os.PathLike | None, adb: bool) -> Path:
    path = Path(runner) if runner is not None else default_runner(adb)
    if not path.is_file():
        preset = "android-arm64-v8a" if adb else "host"
        raise BenchError(
            f"runner '{path}' does not exist: build it with android_runner/ci_build.sh {preset} "
            "or pass --runner"
        )
    if not os.access(path, os.X_OK):
        raise BenchError(f"runner '{path}' is not executable: chmod +x it")
    return path


def runner_libraries(runner: Path) -> list[Path]:
    """Shared ExecuTorch libraries next to the runner (wheel builds); a static Android build has none."""
    return sorted(runner.parent.glob("libexecutorch*.so"))


def compare_outputs(actual: Sequence[np.ndarray], expected: Sequence[np.ndarray]) -> list[OutputCheck]:
    """Per-output max |a - e| and ||a - e|| / ||e||; shape mismatches raise."""
    if len(actual) != len(expected):
        raise BenchError(f"runner wrote {len(actual)} outputs, the Python runtime produced {len(expected)}")
    checks = []
    for index, (got, want) in enumerate(zip(actual, expected, strict=True)):
        if got.shape != want.shape:
            raise BenchError(
                f"output {index} has shape {got.shape} from the runner but {want.shape} from Python"
            )
        diff = got.astype(np.float64) - want.astype(np.float64)
        norm = float(np.linalg.norm(want.astype(np.float64)))
        max_abs = float(np.abs(diff).max()) if diff.size else 0.0
        rel = float(np.linalg.norm(diff)) / norm if norm > 0 else float(np.linalg.norm(diff))
        checks.append(OutputCheck(index, tuple(got.shape), max_abs, rel))
    return checks


def _log_tail(log: str, lines: int = 15) -> str:
    kept = [line for line in log.strip().splitlines() if line.strip()][-lines:]
    return "\n".join("  | " + line for line in kept)


def _exit_description(code: int) -> str:
    signal_number = code - 128 if code > 128 else -code if code < 0 else 0
    if signal_number > 0:
        try:
            return f"crashed with signal {signal_number} ({signal.Signals(signal_number).name})"
        except ValueError:
            return f"crashed with signal {signal_number}"
    return f"exited with code {code}"


@dataclass(frozen=True)
class RunSettings:
    """How the runner is run. With `weight_cache`, a first untimed run writes XNNPACK's packed weights to a
    cache file and the measured run memory-maps them: what an app sees from its second launch on."""

    iters: int = 10
    warmup: int = 1
    threads: int | None = None
    weight_cache: bool = True
    timeout: float = 1800.0


def _runner_args(
    model: str, inputs: Sequence[str], run_dir: str, settings: RunSettings, where: str, *, prime: bool = False
) -> list[str]:
    iters, warmup = (1, 0) if prime else (settings.iters, settings.warmup)
    args = ["--model", model, *[part for path in inputs for part in ("--input", path)]]
    args += ["--output-dir", f"{run_dir}/out", "--json", f"{run_dir}/stats.json", "--where", where]
    args += ["--iters", str(iters), "--warmup", str(warmup)]
    if settings.threads:
        args += ["--threads", str(settings.threads)]
    if settings.weight_cache:
        args += ["--xnnpack-cache", f"{run_dir}/weights.xnncache"]
    return args


def _read_stats(path: Path, log: str) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise BenchError(
            f"runner left no readable stats ({error}); its log ends:\n{_log_tail(log)}"
        ) from None


def _run_on_host(
    runner: Path, model: Path, inputs: list[Path], work: Path, settings: RunSettings
) -> tuple[dict, dict | None, Path]:
    """Returns (measured stats, priming-run stats or None, output folder)."""
    (work / "out").mkdir()
    runs = [True, False] if settings.weight_cache else [False]
    results = []
    for prime in runs:
        argv = [
            str(runner),
            *_runner_args(str(model), [str(p) for p in inputs], str(work), settings, "host", prime=prime),
        ]
        try:
            completed = run_child(argv, timeout=settings.timeout)
        except subprocess.TimeoutExpired:
            raise BenchError(
                f"runner did not finish within {settings.timeout:.0f} s; lower --iters"
            ) from None
        log = completed.stderr + completed.stdout
        if completed.returncode != 0:
            raise BenchError(
                f"runner {_exit_description(completed.returncode)}; its log ends:\n{_log_tail(log)}"
            )
        results.append(_read_stats(work / "stats.json", log))
    return results[-1], results[0] if settings.weight_cache else None, work / "out"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _push_unless_present(device: AdbDevice, local: Path, remote: str, echo: Callable[[str], None]) -> None:
    """Skips the push when the device already holds the same bytes (programs run to gigabytes)."""
    _, output = device.shell(f"sha256sum {shlex.quote(remote)} 2>/dev/null")
    if output.split()[:1] == [_sha256(local)]:
        echo(f"{remote} is already on the device (same sha256); not pushing it again")
        return
    device.push(local, remote)


def _run_over_adb(
    device: AdbDevice,
    runner: Path,
    model: Path,
    inputs: list[Path],
    work: Path,
    settings: RunSettings,
    *,
    output_bytes: int,
    echo: Callable[[str], None],
) -> tuple[dict, dict | None, Path]:
    libraries = runner_libraries(runner)
    uploads = [runner, *libraries, model, *inputs]
    cache_bytes = model.stat().st_size if settings.weight_cache else 0
    needed = int((total_bytes(uploads) + output_bytes + cache_bytes) * SPACE_MARGIN)
    device.check_shell(f"mkdir -p {REMOTE_ROOT}")
    free = device.free_bytes(REMOTE_ROOT)
    if free < needed:
        raise BenchError(
            f"not enough space on device '{device.serial}': {needed / 1e6:.1f} MB needed in "
            f"{REMOTE_ROOT}, {free / 1e6:.1f} MB free; delete files there or free storage"
        )
    run_dir = f"{REMOTE_ROOT}/run"
    device.check_shell(f"rm -rf {run_dir} && mkdir -p {run_dir}/out")
    echo(
        f"pushing runner, {len(libraries)} libraries, {model.name} and {len(inputs)} inputs "
        f"({total_bytes(uploads) / 1e6:.1f} MB) to {device.serial}:{REMOTE_ROOT}"
    )
    for path in [runner, *libraries]:
        device.push(path, f"{REMOTE_ROOT}/{path.name}")
    remote_model = f"{REMOTE_ROOT}/model.pte"
    _push_unless_present(device, model, remote_model, echo)
    remote_inputs = []
    for path in inputs:
        remote_inputs.append(f"{run_dir}/{path.name}")
        device.push(path, remote_inputs[-1])
    device.check_shell(f"chmod 755 {REMOTE_ROOT}/{RUNNER_NAME}")
    echo(f"running {settings.warmup} warm-up + {settings.iters} timed iterations on {device.serial}")
    results = []
    for prime in [True, False] if settings.weight_cache else [False]:
        args = _runner_args(
            remote_model, remote_inputs, run_dir, settings, f"adb:{device.serial}", prime=prime
        )
        command = (
            f"cd {REMOTE_ROOT} && LD_LIBRARY_PATH={REMOTE_ROOT} ./{RUNNER_NAME} "
            f"{' '.join(shlex.quote(a) for a in args)} > {run_dir}/log.txt 2>&1"
        )
        code, _ = device.shell(command, timeout=settings.timeout)
        if code != 0:
            _, log = device.shell(f"tail -n 40 {run_dir}/log.txt")
            raise BenchError(
                f"runner on '{device.serial}' {_exit_description(code)}; its log ends:\n{_log_tail(log)}"
            )
        stats_path = work / f"stats-{len(results)}.json"
        device.pull(f"{run_dir}/stats.json", stats_path)
        results.append(_read_stats(stats_path, ""))
    stats = results[-1]
    local_out = work / "out"
    local_out.mkdir()
    for index, entry in enumerate(stats.get("outputs", [])):
        if entry and "file" in entry:
            name = Path(entry["file"]).name
            device.pull(f"{run_dir}/out/{name}", local_out / name)
        else:
            raise BenchError(f"runner wrote no file for output {index}")
    return stats, results[0] if settings.weight_cache else None, local_out


def _load_outputs(output_dir: Path, count: int) -> list[np.ndarray]:
    arrays = []
    for index in range(count):
        path = output_dir / f"output_{index}.npy"
        if not path.is_file():
            raise BenchError(f"runner did not write {path.name}")
        arrays.append(np.load(path))
    return arrays


def run_bench(
    model: str | os.PathLike,
    *,
    adb_serial: str | None = None,
    runner: str | os.PathLike | None = None,
    iters: int = 10,
    warmup: int = 1,
    threads: int | None = None,
    json_path: str | os.PathLike | None = None,
    inputs: Sequence[np.ndarray] | None = None,
    seed: int = 0,
    tolerance: float = DEFAULT_TOLERANCE,
    adb: str | None = None,
    timeout: float = 1800.0,
    weight_cache: bool = True,
    echo: Callable[[str], None] = print,
    method: str | None = "forward",
) -> dict:
    """Runs the runner on the host (adb_serial None) or on device `adb_serial`; returns the bench report.

    The report has the contract keys plus `model, runner, pte_bytes, samples_ms, weight_cache,
    first_load_ms (the priming run's load, which packs the weights; null without weight_cache),
    check{ok, tolerance, outputs[{index, shape, max_abs, rel_l2}]}`. Raises BenchError, AdbError or
    ProgramError (one line). `method=None`: the method whose inputs have the shapes of `inputs`.
    """
    model = Path(model)
    if iters < 1 or warmup < 0:
        raise BenchError(f"--iters must be >= 1 and warm-up >= 0, got iters={iters}, warmup={warmup}")
    if threads is not None and threads < 1:
        raise BenchError(f"--threads must be >= 1, got {threads}")
    runner_path = _resolve_runner(runner, adb_serial is not None)
    device = AdbDevice.connect(adb_serial, adb) if adb_serial is not None else None
    if method is None:  # the method the inputs fit, as the runner picks it
        if inputs is None:
            raise BenchError("pass the inputs (or a method) to pick the method by their shapes")
        method = method_for_shapes(model, [np.shape(a) for a in inputs])
    reference = PteProgram(model, method)
    arrays = reference.check_inputs(inputs if inputs is not None else example_inputs(reference.inputs, seed))
    with tempfile.TemporaryDirectory(prefix="vggt-et-bench-") as temp:
        work = Path(temp)
        input_paths = []
        for index, array in enumerate(arrays):
            input_paths.append(work / f"input_{index}.npy")
            np.save(input_paths[-1], array)
        settings = RunSettings(iters, warmup, threads, weight_cache, timeout)
        if device is None:
            echo(f"running {warmup} warm-up + {iters} timed iterations of {model.name} on the host")
            stats, primed, output_dir = _run_on_host(runner_path, model, input_paths, work, settings)
        else:
            output_bytes = sum(spec.nbytes for spec in reference.outputs)
            stats, primed, output_dir = _run_over_adb(
                device, runner_path, model, input_paths, work, settings, output_bytes=output_bytes, echo=echo
            )
        actual = _load_outputs(output_dir, len(reference.outputs))
    checks = compare_outputs(actual, reference.run(arrays))
    report = {
        key: stats[key] for key in ("where", "iters", "threads", "load_ms", "latency_ms", "peak_rss_bytes")
    }
    report.update(
        model=str(model),
        runner=str(runner_path),
        pte_bytes=model.stat().st_size,
        samples_ms=stats.get("samples_ms", []),
        weight_cache=weight_cache,
        first_load_ms=primed["load_ms"] if primed else None,
        check={
            "ok": all(c.rel_l2 <= tolerance for c in checks),
            "tolerance": tolerance,
            "outputs": [
                {"index": c.index, "shape": list(c.shape), "max_abs": c.max_abs, "rel_l2": c.rel_l2}
                for c in checks
            ],
        },
    )
    if json_path is not None:
        write_json(json_path, report)
    return report


def format_report(report: dict) -> str:
    """The report as a two-column table: timings, memory, then one row per output check."""
    latency = report["latency_ms"]
    rows = [
        ("where", report["where"]),
        ("iters / threads", f"{report['iters']} / {report['threads']}"),
        (
            "load",
            f"{report['load_ms']:.1f} ms"
            + (
                f" (first load, packing weights: {report['first_load_ms']:.1f} ms)"
                if report.get("first_load_ms") is not None
                else ""
            ),
        ),
        ("latency min / median", f"{latency['min']:.2f} / {latency['median']:.2f} ms"),
        ("latency p90 / max", f"{latency['p90']:.2f} / {latency['max']:.2f} ms"),
        ("peak RSS", f"{report['peak_rss_bytes'] / 2**20:.1f} MiB"),
        ("program size", f"{report['pte_bytes'] / 2**20:.2f} MiB"),
        ("peak RSS / program", f"{report['peak_rss_bytes'] / max(report['pte_bytes'], 1):.2f}x"),
    ]
    for check in report["check"]["outputs"]:
        rows.append(
            (
                f"output {check['index']} vs Python",
                f"max|d| {check['max_abs']:.2e}  rel L2 {check['rel_l2']:.2e}",
            )
        )
    rows.append(
        (
            "outputs match",
            "yes" if report["check"]["ok"] else f"NO (tolerance {report['check']['tolerance']})",
        )
    )
    return format_table(["measure", "value"], rows)


def bench_command(
    model: str,
    host: bool,
    adb_serial: str | None,
    runner: str | None = None,
    iters: int = 10,
    threads: int | None = None,
    json_path: str | None = None,
    weight_cache: bool = True,
    echo: Callable[[str], None] = print,
    method: str = "forward",
) -> dict:
    """What `vggt-et bench` calls: exactly one of host / adb_serial; prints the table; raises USER_ERRORS."""
    if host == (adb_serial is not None):
        raise BenchError("pass exactly one of --host and --adb-serial SERIAL")
    report = run_bench(
        model,
        adb_serial=adb_serial,
        runner=runner,
        iters=iters,
        threads=threads,
        json_path=json_path,
        weight_cache=weight_cache,
        echo=echo,
        method=method,
    )
    echo(format_report(report))
    return report


USER_ERRORS = (BenchError, AdbError, ProgramError)
"""Exceptions `vggt-et bench` should turn into a one-line message and exit code 2."""
