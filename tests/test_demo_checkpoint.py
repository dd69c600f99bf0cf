"""`vggt-et demo --checkpoint builtin:NAME`: the demo compiles, runs and compares the builtin's weights (with
the registry pointed at a `tiny` checkpoint the test writes) and draws side_by_side.png, one row per frame.
The default demo (random weights) is the README's first command, run in test_readme.py."""

from __future__ import annotations

import json

import torch
from PIL import Image
from safetensors.torch import save_file

import vggt_et
from vggt_et.commands.demo import SIDE_BY_SIDE, run_demo
from vggt_et.model import builtin
from vggt_et.outputs.inference import program_info
from vggt_et.outputs.visualize import side_by_side_size


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
