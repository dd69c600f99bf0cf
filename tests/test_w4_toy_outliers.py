"""Acceptance on the toy outlier transformer: rotation + Fisher W4 at most 0.6x plain RTN task error."""

from __future__ import annotations

import pytest
from bench_script import load_benchmark

pytestmark = pytest.mark.usefixtures("one_thread")


def _benchmark():
    return load_benchmark("w4_toy_outliers.py")


def test_rotation_plus_fisher_beats_plain_rtn_at_equal_size() -> None:
    bench = _benchmark()
    variants = ("plain RTN", "+both", "+both +mixed 0.9")
    for group_size in (32, None):
        plain, both, mixed = bench.run(seed=0, group_size=group_size, calib=2, evaluate=2, variants=variants)
        assert both.size_bytes == plain.size_bytes  # same bits, same group size, nothing added
        assert both.task_error <= 0.6 * plain.task_error, (group_size, both.task_error, plain.task_error)
        # Mixed precision spends at most 10% of the eligible parameters on int8 and must not be worse than
        # the all-int4 plain baseline.
        assert plain.size_bytes < mixed.size_bytes < 1.2 * plain.size_bytes
        assert mixed.task_error <= 0.6 * plain.task_error


def test_gain_survives_torchao_8da4w_numerics_and_mean_keeping_rotation() -> None:
    """Same comparison with the export path's own quantizer (torchao Intx weights, int8 dynamic activations)
    and the rotation variant VGGT needs (fold_centring=False, RotatedLayerNorm)."""
    bench = _benchmark()
    plain, both = bench.run(
        seed=1,
        group_size=32,
        calib=2,
        evaluate=2,
        variants=("plain RTN", "+both"),
        torchao=True,
        keep_mean=True,
    )
    assert both.task_error <= 0.6 * plain.task_error, (both.task_error, plain.task_error)
