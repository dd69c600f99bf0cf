"""Stage timing, progress lines and peak memory for long pipelines (compile, audit, benchmarks)."""

from __future__ import annotations

import logging
import resource
import time
from collections.abc import Iterator
from contextlib import contextmanager

logger = logging.getLogger(__name__)


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def available_memory_bytes() -> int | None:
    """What the kernel could give this process now (MemAvailable), None where /proc/meminfo is missing."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


class StageClock:
    """Times named stages; logs a line as each starts and ends (the CLI shows them on stderr)."""

    def __init__(self, *, quiet: bool = False) -> None:
        self.seconds: dict[str, float] = {}
        self.quiet = quiet

    @contextmanager
    def stage(self, name: str, detail: str = "") -> Iterator[None]:
        if not self.quiet:
            logger.info("%s%s ...", name, " " + detail if detail else "")
        start = time.perf_counter()
        yield
        elapsed = time.perf_counter() - start
        self.seconds[name] = self.seconds.get(name, 0.0) + elapsed
        if not self.quiet:
            rss = peak_rss_bytes() / 2**30
            logger.info("%s done in %.1f s (peak RSS %.2f GiB)", name, elapsed, rss)

    @property
    def total(self) -> float:
        return sum(self.seconds.values())
