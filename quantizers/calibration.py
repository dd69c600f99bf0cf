"""Calibration loop for PT2E-prepared modules, and checks that every observer actually saw data.

A static quantizer that saw no data still converts: its observers hand out default ranges and the program
runs, silently wrong. So calibration counts samples, counts the calls each observer received, and fails
loudly when either is zero.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from tqdm import tqdm


class CalibrationError(ValueError):
    """Calibration that cannot produce trustworthy ranges (no samples, bad samples, observers left empty)."""


@dataclass
class CalibrationStats:
    """What one calibration pass did: how many samples ran and how often each observer was called."""

    samples: int
    seconds: float
    observer_calls: dict[str, int] = field(default_factory=dict)

    @property
    def observers(self) -> int:
        return len(self.observer_calls)


def observers(module: nn.Module) -> dict[str, nn.Module]:
    """The observer submodules PT2E ``prepare_pt2e`` inserted (``activation_post_process_*``), by name."""
    from torchao.quantization.pt2e import AffineQuantizedObserverBase, ObserverBase

    kinds = (ObserverBase, AffineQuantizedObserverBase)  # the latter: per-block weights (QNN LPBQ)
    return {name: child for name, child in module.named_modules() if isinstance(child, kinds)}


def count_observers(module: nn.Module) -> int:
    """Number of observers in a prepared module (0 means prepare annotated nothing)."""
    return len(observers(module))


def _range_is_empty(observer: nn.Module) -> bool:
    """True for min/max observers still holding their initial (empty or infinite) range."""
    min_val = getattr(observer, "min_val", None)
    max_val = getattr(observer, "max_val", None)
    if not isinstance(min_val, Tensor) or not isinstance(max_val, Tensor):
        return False  # placeholder / dynamic observers keep no range: nothing to check
    if min_val.numel() == 0 or max_val.numel() == 0:
        return True
    return bool(torch.isinf(min_val).all() or torch.isinf(max_val).all())


def observers_without_data(module: nn.Module, observer_calls: dict[str, int] | None = None) -> list[str]:
    """Observers that saw no data: never called (when calls were counted) or still holding an empty range."""
    empty = []
    for name, observer in observers(module).items():
        never_called = observer_calls is not None and observer_calls.get(name, 0) == 0
        if never_called or _range_is_empty(observer):
            empty.append(name)
    return empty


def check_observers_saw_data(module: nn.Module, observer_calls: dict[str, int] | None = None) -> None:
    """Raise :class:`CalibrationError` when the module has no observers or any of them saw no data."""
    if count_observers(module) == 0:
        raise CalibrationError(
            "the prepared module has no observers, so nothing would be quantized; check that the quantizer "
            "supports the graph's ops and that keep-float patterns do not cover every layer"
        )
    empty = observers_without_data(module, observer_calls)
    if empty:
        shown = ", ".join(empty[:5]) + (f" and {len(empty) - 5} more" if len(empty) > 5 else "")
        raise CalibrationError(
            f"{len(empty)} observer(s) saw no data during calibration ({shown}); feed samples that run the "
            "whole program (same input signature as the export)"
        )


def _as_args(sample: object, index: int) -> tuple[Tensor, ...]:
    if isinstance(sample, Tensor):
        return (sample,)
    if isinstance(sample, (tuple, list)) and all(isinstance(item, Tensor) for item in sample):
        return tuple(sample)
    raise CalibrationError(
        f"calibration sample {index} is a {type(sample).__name__}; give each sample as a tensor or a tuple "
        "of tensors matching the exported program's inputs"
    )


def _sample_count(samples: Iterable) -> int | None:
    try:
        return len(samples)  # type: ignore[arg-type]
    except TypeError:
        return None


def calibrate(
    module: nn.Module,
    samples: Iterable[tuple[Tensor, ...] | Tensor],
    *,
    progress: bool = True,
    desc: str = "calibrating",
    check: bool = True,
) -> CalibrationStats:
    """Run a prepared module over the samples (no grad), with a progress bar on stderr.

    Raises :class:`CalibrationError` when there are no samples, a sample is not tensors, or (``check``)
    some observer saw no data.
    """
    if samples is None:
        raise CalibrationError(
            "this recipe needs calibration samples and got None; pass an iterable of input tuples"
        )
    calls = {name: 0 for name in observers(module)}
    handles = []
    for name, observer in observers(module).items():

        def count_call(_module, _inputs, name=name):
            calls[name] += 1

        handles.append(observer.register_forward_pre_hook(count_call))

    start = time.perf_counter()
    count = 0
    try:
        bar = tqdm(
            _iterate(samples),
            total=_sample_count(samples),
            desc=desc,
            unit="sample",
            file=sys.stderr,
            disable=not progress,
        )
        with torch.no_grad():
            for index, sample in enumerate(bar):
                module(*_as_args(sample, index))
                count += 1
    finally:
        for handle in handles:
            handle.remove()
    seconds = time.perf_counter() - start

    if count == 0:
        raise CalibrationError(
            "calibration received no samples; pass at least one input tuple (e.g. a few representative "
            "frames) or use a recipe with dynamic activations"
        )
    if check:
        check_observers_saw_data(module, calls)
    return CalibrationStats(samples=count, seconds=seconds, observer_calls=calls)


def _iterate(samples: Iterable) -> Iterator:
    try:
        return iter(samples)
    except TypeError:
        raise CalibrationError(
            f"calibration samples must be iterable, got {type(samples).__name__}; pass a list of input tuples"
        ) from None
