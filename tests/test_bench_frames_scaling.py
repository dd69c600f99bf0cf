"""benchmarks/frames_scaling.py's summary lines: bounded vs today at equal S, activation increments per frame."""

from __future__ import annotations

from bench_script import load_benchmark


def _row(form: str, frames: int, activations: float, latency: float = 1.0, rss: float = 100.0) -> dict:
    return {
        "quant": "w4",
        "form": form,
        "frames": frames,
        "activations_mib": activations,
        "latency_s": latency,
        "peak_rss_mib": rss,
    }


def test_increments_per_step_and_over_the_whole_range() -> None:
    fs = load_benchmark("frames_scaling.py")
    rows = [
        _row("64MiB", 8, 1200.0),
        _row("64MiB", 2, 480.0),
        _row("64MiB", 4, 720.0),
        _row("64MiB", 16, 2160.0),
    ]
    (line,) = fs.ratios(rows)
    assert line == (
        "w4 64MiB activation increment: S 2->4: 120 MiB/frame; S 4->8: 120 MiB/frame; "
        "S 8->16: 120 MiB/frame; overall S 2->16: 120 MiB/frame"
    )


def test_bounded_against_today_at_equal_frames() -> None:
    fs = load_benchmark("frames_scaling.py")
    lines = fs.ratios([_row("none", 2, 600.0, 2.0, 400.0), _row("64MiB", 2, 500.0, 1.0, 300.0)])
    assert "w4 S=2: 64MiB / today: latency 0.500x, peak RSS 0.750x" in lines
    # One frame count per form: no increment to print.
    assert not any("increment" in line for line in lines)
