"""Byte sizes as people type them ('64MiB', '512KiB', '1GB'), parsed without torch.

It lives here, not beside the pass that uses it, so the command line can check `--attention-budget`
before it imports the compiler (ExecuTorch alone takes seconds to import)."""

from __future__ import annotations

import re

_UNITS = {
    "": 1,
    "b": 1,
    "k": 2**10,
    "kb": 10**3,
    "kib": 2**10,
    "m": 2**20,
    "mb": 10**6,
    "mib": 2**20,
    "g": 2**30,
    "gb": 10**9,
    "gib": 2**30,
}


def parse_budget(text: str | int | None) -> int | None:
    """'64MiB' / '512KiB' / '1GB' / 1048576 → bytes; 'none' (or None) → None: attention left whole."""
    if text is None or isinstance(text, int):
        if isinstance(text, int) and text < 1:
            raise ValueError(f"attention budget must be positive, got {text}")
        return text
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
    if text.strip().lower() == "none":
        return None
    if not match or match.group(2).lower() not in _UNITS:
        raise ValueError(f"attention budget {text!r} is not a size like 64MiB, 512KiB, 1GiB or 'none'")
    size = int(float(match.group(1)) * _UNITS[match.group(2).lower()])
    if size < 1:
        raise ValueError(f"attention budget must be positive, got {text!r}")
    return size
