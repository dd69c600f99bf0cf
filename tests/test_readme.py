"""The README's documented commands, run as a user would: the main job (`vggt-et demo`) and `run`."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
from PIL import Image

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def _documented(prefix: str) -> list[str]:
    """The first README command starting with `prefix`, split into words (comments dropped)."""
    for line in README.splitlines():
        for part in line.split("`"):
            if part.startswith(prefix):
                return part.split("#")[0].split()
    raise AssertionError(f"README documents no `{prefix} ...` command")


def test_readme_demo_command(tmp_path, vggt_et_cli) -> None:
    command = _documented("bash .ci/install && vggt-et demo")  # the first line: install, then the demo
    demo = command[command.index("vggt-et") + 1 :]
    done = subprocess.run([*vggt_et_cli, *demo], capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    out = tmp_path / demo[demo.index("-o") + 1]
    result = json.loads((out / "compare.json").read_text())
    assert all(m["rel_l2"] <= 1e-5 for m in result["outputs"].values()), result["outputs"]
    assert (out / "run" / "points.ply").is_file() and (out / "run" / "depth_00.png").is_file()
    from vggt_et.outputs.inference import program_info
    from vggt_et.outputs.visualize import side_by_side_size

    (pte,) = out.glob("*_xnnpack_fp32.pte")  # the shipped trained model's preset
    info = program_info(pte)  # one row per frame, four columns
    with Image.open(out / "side_by_side.png") as picture:
        assert picture.size[::-1] == side_by_side_size(info.frames, info.height, info.width)


def test_readme_run_example(tmp_path, vggt_et_cli, tiny_depth_pte) -> None:
    command = _documented("vggt-et run M.pte --images")  # vggt-et run M.pte --images a.jpg b.jpg -o out/
    rng = np.random.default_rng(0)
    for name in ("a.jpg", "b.jpg"):
        Image.fromarray(rng.integers(0, 255, (60, 80, 3), dtype=np.uint8)).save(tmp_path / name)
    args = [str(tiny_depth_pte) if a == "M.pte" else a for a in command[1:]]
    done = subprocess.run([*vggt_et_cli, *args], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-1500:]
    out = tmp_path / command[command.index("-o") + 1]
    assert (out / "depth_00.png").is_file() and (out / "depth_01.png").is_file()
