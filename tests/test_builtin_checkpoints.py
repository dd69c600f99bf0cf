"""Built-in checkpoints (`builtin:NAME`): resolved where checkpoints are read and checked
(vggt_et.model.loading), so `load_model` and every command take them; an unknown name, a file this build
does not ship and a preset the checkpoint does not fit are each one line, exit 2, nothing written.

The registry is pointed at a `tiny` checkpoint the test writes itself (the shipped `small-synthetic` file
comes from a training run, and these tests must not depend on it being there or not)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import vggt_et
from vggt_et.model import builtin
from vggt_et.model.loading import check_model_source, checkpoint_layout
from vggt_et.utils.errors import UserError

NAME = "tiny-test"

# The console script with the registry pointed at the folder in argv[1], which holds `tiny-test` (tiny).
LAUNCHER = (
    "import sys; from pathlib import Path; from vggt_et.model import builtin; "
    "builtin.CHECKPOINT_DIR = Path(sys.argv.pop(1)); "
    f"builtin.BUILTINS[{NAME!r}] = builtin.BuiltinCheckpoint({NAME!r}, 'tiny', 'test'); "
    "sys.argv[0] = 'vggt-et'; from vggt_et.cli import console_script; console_script()"
)


def _write_tiny(folder: Path, model: torch.nn.Module, dtype: torch.dtype = torch.float32) -> dict:
    state = {k: v.to(dtype).contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / f"{NAME}.safetensors"))
    return state


@pytest.fixture
def registry(tmp_path, monkeypatch) -> Path:
    """The registry's folder moved to an empty tmp folder, with `tiny-test` (tiny) registered."""
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    monkeypatch.setattr(builtin, "CHECKPOINT_DIR", folder)
    monkeypatch.setitem(builtin.BUILTINS, NAME, builtin.BuiltinCheckpoint(NAME, "tiny", "test"))
    return folder


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16-storage"])
def test_builtin_loads_exactly(registry, tiny_model, dtype) -> None:
    saved = _write_tiny(registry, tiny_model, dtype)
    loaded = vggt_et.load_model("tiny", checkpoint=f"builtin:{NAME}").state_dict()
    assert loaded.keys() == saved.keys()
    for key, tensor in saved.items():
        assert loaded[key].dtype == torch.float32, key
        assert torch.equal(loaded[key], tensor.to(torch.float32)), key


def test_checks_take_builtin(registry, tiny_model) -> None:
    saved = _write_tiny(registry, tiny_model)
    check_model_source("tiny", f"builtin:{NAME}", False)
    layout = checkpoint_layout(f"builtin:{NAME}")
    assert {k: tuple(v.shape) for k, v in layout.items()} == {k: tuple(v.shape) for k, v in saved.items()}


def _one_line_error(call) -> str:
    with pytest.raises(UserError) as caught:
        call()
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_unknown_builtin_lists_the_known_ones(registry) -> None:
    message = _one_line_error(lambda: vggt_et.load_model("small", checkpoint="builtin:nope"))
    assert "builtin:nope" in message and "builtin:small-synthetic" in message and f"builtin:{NAME}" in message


def test_unshipped_builtin_says_how_it_is_made(registry) -> None:
    message = _one_line_error(lambda: check_model_source("tiny", f"builtin:{NAME}", False))
    assert str(registry / f"{NAME}.safetensors") in message and "vggt-et train --preset tiny" in message


def test_builtin_with_another_preset_names_the_right_one(registry, tiny_model) -> None:
    _write_tiny(registry, tiny_model)
    message = _one_line_error(lambda: vggt_et.load_model("small", checkpoint=f"builtin:{NAME}"))
    assert "pass --preset tiny" in message


def test_registry_files_are_package_data() -> None:
    import tomllib

    root = Path(__file__).resolve().parents[1]
    data = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert {"checkpoints/*.safetensors", "checkpoints/*.md"} <= set(data["vggt_et.model"])
    assert builtin.CHECKPOINT_DIR == root / "vggt_et" / "model" / "checkpoints"
    for entry in builtin.BUILTINS.values():
        assert entry.path.parent == builtin.CHECKPOINT_DIR and entry.card.suffix == ".md"


def _listing(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


def _cli(command: list[str], folder: Path) -> tuple[subprocess.CompletedProcess, bool]:
    """Run in `folder`; also say whether anything in it changed."""
    before = _listing(folder)
    env = {**os.environ, "VGGT_ET_DEBUG": ""}
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, cwd=folder)
    return done, _listing(folder) != before


def _launcher(checkpoints: Path) -> list[str]:
    return [sys.executable, "-c", LAUNCHER, str(checkpoints)]


CASES = {  # name: (arguments, what the one line names); {dir} is the case's folder, {pte} a tiny program
    "compile-unknown": (
        ["compile", "--preset", "tiny", "--checkpoint", "builtin:nope", "-o", "{dir}/m.pte"],
        "known: builtin:small-synthetic",
    ),
    "audit-wrong-preset": (
        ["audit", "--preset", "tiny", "--checkpoint", "builtin:small-synthetic"],
        "pass --preset small",
    ),
    "demo-unknown": (["demo", "--checkpoint", "builtin:nope", "-o", "{dir}/o"], "builtin:nope"),
    "compare-unknown": (["compare", "{pte}", "--checkpoint", "builtin:nope"], "builtin:nope"),
    "compile-unshipped": (
        ["compile", "--preset", "tiny", "--checkpoint", f"builtin:{NAME}", "-o", "{dir}/m.pte"],
        "vggt-et train",
    ),
    "fisher-unshipped": (
        ["fisher", "--preset", "tiny", "--checkpoint", f"builtin:{NAME}", "-o", "{dir}/f.pt"],
        "vggt-et train",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_cli_refuses_bad_builtin_in_one_line(case, tmp_path, vggt_et_cli, request) -> None:
    """Through the console script (the `-unshipped` cases with the registry pointed at an empty folder)."""
    args, names = CASES[case]
    pte = request.getfixturevalue("tiny_depth_pte") if "{pte}" in args else None
    (tmp_path / "checkpoints").mkdir()
    cli = _launcher(tmp_path / "checkpoints") if case.endswith("-unshipped") else vggt_et_cli
    work = tmp_path / "work"
    work.mkdir()
    done, changed = _cli([*cli, *(a.format(dir=work, pte=pte) for a in args)], work)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2, done.stderr[-1500:]
    assert len(lines) == 1 and names in lines[0], done.stderr
    assert not changed


def test_compare_with_builtin_through_the_cli(tmp_path, tiny_model, tiny_depth_pte) -> None:
    """`compare --checkpoint builtin:NAME` runs: the registry's tiny weights are the program's (seed 0)."""
    (tmp_path / "checkpoints").mkdir()
    _write_tiny(tmp_path / "checkpoints", tiny_model)
    args = ["compare", str(tiny_depth_pte), "--checkpoint", f"builtin:{NAME}", "--json", "c.json"]
    done, _ = _cli([*_launcher(tmp_path / "checkpoints"), *args], tmp_path)
    assert done.returncode == 0, done.stderr[-1500:]
    report = json.loads((tmp_path / "c.json").read_text())
    assert report["outputs"]["depth"]["rel_l2"] <= 1e-5
