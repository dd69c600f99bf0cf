"""`vggt-et demo --checkpoint builtin:NAME`: the demo compiles, runs and compares the builtin's weights (with
the registry pointed at a `tiny` checkpoint the test writes) and draws side_by_side.png, one row per frame.
The default demo (the shipped trained model) is the README's first command, run in test_readme.py; which
weights each flag combination picks is checked here without compiling."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

import vggt_et
from vggt_et.commands.demo import DEFAULT_CHECKPOINT, SIDE_BY_SIDE, demo_weights, run_demo
from vggt_et.model import builtin
from vggt_et.outputs.inference import program_info
from vggt_et.outputs.visualize import side_by_side_size
from vggt_et.utils.errors import UserError


def test_demo_with_a_builtin_checkpoint(tmp_path, monkeypatch, capsys) -> None:
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    monkeypatch.setattr(builtin, "CHECKPOINT_DIR", folder)
    monkeypatch.setitem(builtin.BUILTINS, "tiny-test", builtin.BuiltinCheckpoint("tiny-test", "tiny", "test"))
    model = vggt_et.load_model("tiny", random_weights=True, seed=3)  # not the demo's random weights
    save_file(
        {k: v.to(torch.float16).contiguous() for k, v in model.state_dict().items()},
        str(folder / "tiny-test.safetensors"),
    )

    out = tmp_path / "demo"
    run_demo(out, checkpoint="builtin:tiny-test")  # the preset comes from the builtin

    said = capsys.readouterr().out
    assert "2/4 compiling tiny (checkpoint builtin:tiny-test)" in said and SIDE_BY_SIDE in said
    report = json.loads((out / "tiny_xnnpack_fp32.json").read_text())
    assert (
        report["arguments"]["checkpoint"] == "builtin:tiny-test" and not report["arguments"]["random_weights"]
    )
    result = json.loads((out / "compare.json").read_text())
    assert all(m["rel_l2"] <= 1e-5 for m in result["outputs"].values()), result["outputs"]
    info = program_info(out / "tiny_xnnpack_fp32.pte")
    with Image.open(out / SIDE_BY_SIDE) as picture:
        assert picture.size[::-1] == side_by_side_size(info.frames, info.height, info.width)
    manifest = json.loads((out / ".vggt-et-outputs.json").read_text())
    assert SIDE_BY_SIDE in manifest["files"]


@pytest.mark.parametrize(
    ("preset", "checkpoint", "random_weights", "expected"),
    [
        (None, None, False, ("small", DEFAULT_CHECKPOINT)),  # the README's first command: the trained model
        ("small", None, False, ("small", DEFAULT_CHECKPOINT)),  # a preset with a built-in checkpoint gets it
        ("tiny", None, False, ("tiny", None)),  # none built in for tiny: seeded random weights
        ("vggt-omega-tiny", None, False, ("vggt-omega-tiny", None)),
        (None, None, True, ("tiny", None)),  # --random-weights alone: the old demo
        ("small", None, True, ("small", None)),
        (None, "w.safetensors", False, ("tiny", "w.safetensors")),  # a file names no preset
        ("small", "w.safetensors", False, ("small", "w.safetensors")),
    ],
)
def test_demo_picks_weights(preset, checkpoint, random_weights, expected) -> None:
    assert demo_weights(preset, checkpoint, random_weights) == expected


def test_demo_refuses_checkpoint_and_random_weights() -> None:
    with pytest.raises(UserError, match="exclude each other"):
        demo_weights(None, "w.safetensors", True)
