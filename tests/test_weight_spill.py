"""Memory-lean lowering (vggt_et/pipeline/weight_spill.py): same .pte bytes, weights spilled, stock restored."""

from __future__ import annotations

import io

import torch
from toy_transformers import export_toy, image_input, toy_vit

import vggt_et.passes as P
from vggt_et.passes.graph_utils import copy_program
from vggt_et.pipeline.weight_spill import copy_sharing_constants, lean_lowering


def _pte_bytes(ep) -> bytes:
    buffer = io.BytesIO()
    P.lower_xnnpack(copy_program(ep)).to_executorch().write_to_file(buffer)
    return buffer.getvalue()


def test_copy_shares_weights_but_not_the_graph() -> None:
    ep = export_toy(toy_vit(depth=1), image_input())
    copied = copy_sharing_constants(ep)
    assert copied.graph_module is not ep.graph_module
    assert all(copied.state_dict[k] is v for k, v in ep.state_dict.items())
    assert all(copied.constants[k] is v for k, v in ep.constants.items())


def test_lean_lowering_writes_the_same_pte_and_cleans_up(tmp_path) -> None:
    from executorch.backends.xnnpack.xnnpack_preprocess import XnnpackBackend
    from executorch.exir._serialize._named_data_store import NamedDataStore

    stock_add = NamedDataStore.add_named_data
    ep = P.apply(export_toy(toy_vit(depth=2, head=True), image_input()), "xnnpack")
    weights = {k: v.detach().clone() for k, v in ep.state_dict.items()}
    stock = _pte_bytes(ep)
    with lean_lowering(tmp_path, spill_min_bytes=1) as spilled:
        scratch = list(tmp_path.iterdir())
        lean = _pte_bytes(ep)
        assert spilled.files > 0
        assert spilled.bytes >= sum(v.numel() * v.element_size() for v in weights.values() if v.dim() > 1)
        assert "copy_exported_program_for_preprocess" in XnnpackBackend.__dict__
    assert lean == stock
    assert len(scratch) == 1 and not scratch[0].exists()  # scratch folder removed on exit
    assert NamedDataStore.add_named_data is stock_add
    assert "copy_exported_program_for_preprocess" not in XnnpackBackend.__dict__
    for name, value in weights.items():  # preprocess shared the weights and did not write into them
        assert torch.equal(ep.state_dict[name], value), name


def test_killed_compile_leaves_nothing_behind(tmp_path) -> None:
    """SIGTERM during lowering: exit 143, no .pte, no scratch folder, no temporary files."""
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "out"
    out.mkdir()
    args = ["compile", "--preset", "tiny", "--random-weights", "--frames", "2", "--height", "28"]
    args += ["--width", "42", "-o", str(out / "tiny.pte")]
    proc = subprocess.Popen([sys.executable, "-m", "vggt_et.cli", *args], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not list(out.glob(".vggt_et_lowering_*")):
        assert proc.poll() is None and time.monotonic() < deadline, "lowering never started"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 143, err
    assert "stopped by signal 15" in err
    assert list(out.iterdir()) == []
