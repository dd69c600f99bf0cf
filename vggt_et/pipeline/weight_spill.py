"""Memory-lean XNNPACK lowering: one copy of the weights in RAM instead of three.

Stock `to_edge_transform_and_lower` peaks at three copies of every delegated weight (measured on
VGGT-1B fp32: 11.4 GiB for 3.5 GiB of weights):

1. the edge program's own tensors, which the lowered module keeps as its `original_module`;
2. `BackendDetails.copy_exported_program_for_preprocess`, a `deepcopy` of each partition, weights
   included, so that a backend may rewrite the partition's graph. XNNPACK's preprocess rewrites
   the graph but never writes into a weight tensor (its node visitors read weights and serialise
   copies), so the copy can share the tensors;
3. XNNPACK's serialiser hands a `bytes` copy of each weight to the NamedDataStore, which holds it
   until the .pte is written. ExecuTorch's serialiser also accepts `FileBackedData` and streams
   it into the .pte, so large blobs are spilled to files in a scratch folder as they arrive.

A fourth cost is not a copy but the partitioner's reachability sets; `vggt_et.passes.partitioning`
replaces those.

`lean_lowering()` applies the two copy savings for the duration of lowering and serialisation and restores the
stock behaviour afterwards; the .pte is byte-identical to the stock one (tests/test_weight_spill.py).
"""

from __future__ import annotations

import copy
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from vggt_et.utils.cleanup import temporary

SPILL_MIN_BYTES = 1 << 16  # smaller blobs stay in memory: a file each would cost more than it saves


@dataclass
class SpillStats:
    """What the lean lowering moved out of memory (reported in report.json)."""

    files: int = 0
    bytes: int = 0


def _constant_tensors(program) -> list:
    """The program's weights, buffers and lifted constants: what a preprocess copy may share."""
    tensors = list(program.state_dict.values()) + list(program.constants.values())
    return [t for t in tensors if hasattr(t, "untyped_storage")]


def copy_sharing_constants(program):
    """deepcopy of an ExportedProgram whose graph is private but whose constant tensors are shared."""
    memo = {id(t): t for t in _constant_tensors(program)}
    return copy.deepcopy(program, memo)


@contextmanager
def lean_lowering(
    scratch_parent: str | os.PathLike | None = None,
    *,
    spill: bool = True,
    spill_min_bytes: int = SPILL_MIN_BYTES,
) -> Iterator[SpillStats]:
    """Share weights with XNNPACK's preprocess copy and spill serialised weights to scratch files.

    Everything that writes the .pte must run inside the context: the spilled blobs live in a
    scratch folder (under `scratch_parent`, normally the output's folder, so no tmpfs fills up)
    that is removed on exit. `spill=False` keeps the blobs in memory: ExecuTorch's ETRecord serialises
    them into its JSON and cannot take file-backed ones.
    """
    from executorch.backends.xnnpack.xnnpack_preprocess import XnnpackBackend
    from executorch.exir._serialize._cord import FileBackedData
    from executorch.exir._serialize._named_data_store import NamedDataStore

    with temporary(tempfile.mkdtemp(prefix=".vggt_et_lowering_", dir=scratch_parent)) as scratch:
        stats = SpillStats()
        stock_add = NamedDataStore.add_named_data
        own_copy = "copy_exported_program_for_preprocess" in XnnpackBackend.__dict__
        stock_copy = XnnpackBackend.__dict__.get("copy_exported_program_for_preprocess")

        def to_file(data: bytes) -> FileBackedData:
            handle, path = tempfile.mkstemp(dir=scratch, suffix=".bin")
            with os.fdopen(handle, "wb") as f:
                f.write(data)
            stats.files += 1
            stats.bytes += len(data)
            return FileBackedData(path, cleanup=True)

        def add_named_data(self, key, data, alignment=1, external_tag=None, tensor_layout=None):
            if spill and isinstance(data, bytes) and len(data) >= spill_min_bytes:
                data = to_file(data)
            return stock_add(self, key, data, alignment, external_tag, tensor_layout)

        NamedDataStore.add_named_data = add_named_data
        XnnpackBackend.copy_exported_program_for_preprocess = classmethod(
            lambda cls, program, compile_specs: copy_sharing_constants(program)
        )
        try:
            yield stats
        finally:
            NamedDataStore.add_named_data = stock_add
            if own_copy:
                XnnpackBackend.copy_exported_program_for_preprocess = stock_copy
            else:
                del XnnpackBackend.copy_exported_program_for_preprocess
