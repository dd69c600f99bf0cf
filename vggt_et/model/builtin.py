"""Built-in checkpoints: `--checkpoint builtin:NAME`, weights shipped as package data.

Each entry names the preset it fits; its safetensors file and its model card (markdown: data, recipe,
metrics, seed) live side by side in `vggt_et/model/checkpoints/` as `NAME.safetensors` and `NAME.md`.
`resolve_checkpoint` turns `builtin:NAME` into that file; `vggt_et.model.loading` calls it wherever a
checkpoint is read or checked, so every command and `load_model` accept the form.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vggt_et.utils.errors import UserError

PREFIX = "builtin:"
CHECKPOINT_DIR = Path(__file__).with_name("checkpoints")


@dataclass(frozen=True)
class BuiltinCheckpoint:
    """A checkpoint shipped with the package: `builtin:NAME` loads into `preset`."""

    name: str
    preset: str
    summary: str

    @property
    def path(self) -> Path:
        return CHECKPOINT_DIR / f"{self.name}.safetensors"

    @property
    def card(self) -> Path:
        return CHECKPOINT_DIR / f"{self.name}.md"


BUILTINS: dict[str, BuiltinCheckpoint] = {
    "small-synthetic": BuiltinCheckpoint(
        "small-synthetic", "small", "`small` trained on synthetic scenes by `vggt-et train`"
    ),
}


def builtin_name(checkpoint: str | Path | None) -> str | None:
    """NAME of a `builtin:NAME` checkpoint argument; None for a path (or no checkpoint)."""
    text = "" if checkpoint is None else str(checkpoint)
    return text[len(PREFIX) :] if text.startswith(PREFIX) else None


def builtin_checkpoint(checkpoint: str | Path) -> BuiltinCheckpoint | None:
    """The registry entry of `builtin:NAME` (an unknown NAME is a user error); None for a path."""
    name = builtin_name(checkpoint)
    if name is None:
        return None
    if name not in BUILTINS:
        known = ", ".join(f"{PREFIX}{n}" for n in sorted(BUILTINS)) or "none in this build"
        raise UserError(f"--checkpoint {checkpoint}: no built-in checkpoint named {name!r}; known: {known}")
    return BUILTINS[name]


def resolve_checkpoint(checkpoint: str | Path, preset: str | None = None) -> str | Path:
    """The file behind `checkpoint`: a path is returned as given, `builtin:NAME` becomes its shipped file.

    Refused with one line: an unknown NAME (the known ones listed), a builtin that does not fit `preset`
    (the right preset named), a builtin whose file this build does not carry (where it goes, and that
    `vggt-et train` makes it)."""
    entry = builtin_checkpoint(checkpoint)
    if entry is None:
        return checkpoint
    if preset is not None and preset != entry.preset:
        raise UserError(
            f"--checkpoint {checkpoint} fits preset {entry.preset!r}, not {preset!r}; pass --preset {entry.preset}"
        )
    if not entry.path.is_file():
        raise UserError(
            f"--checkpoint {checkpoint}: this build does not ship its file {entry.path}; it is produced by "
            f"`vggt-et train --preset {entry.preset} -o {entry.path}` (model card beside it: {entry.card.name}); "
            "meanwhile use another checkpoint, or random weights"
        )
    return entry.path
