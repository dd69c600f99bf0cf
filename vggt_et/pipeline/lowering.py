"""Backend lowering: partitioners, the QNN SDK check, and serialisation to .pte bytes."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch.export import ExportedProgram

from vggt_et.options import METADATA_METHOD
from vggt_et.utils.errors import UserError


def require_qnn_sdk() -> Path:
    """QNN lowering needs Qualcomm's AI Engine Direct SDK; say so before any heavy work."""
    root = os.environ.get("QNN_SDK_ROOT", "")
    if not root or not Path(root).is_dir():
        where = f" ({root} is not a folder)" if root else ""
        raise UserError(
            f"--backend qnn needs the Qualcomm AI Engine Direct SDK and QNN_SDK_ROOT is not set{where}: "
            "install the SDK (Qualcomm Package Manager) and export QNN_SDK_ROOT=/path/to/qairt/<version>; or use"
            " --stop-before-lowering to run every stage before the QNN partitioner"
        )
    return Path(root)


def metadata_tensor(metadata: dict[str, Any]) -> torch.Tensor:
    return torch.tensor(list(json.dumps(metadata, sort_keys=True).encode()), dtype=torch.uint8)


def partitioners(backend: str, soc: str) -> list:
    if backend == "xnnpack":
        from vggt_et.passes.partitioning import lean_xnnpack_partitioner

        return [lean_xnnpack_partitioner()]
    if backend == "qnn":
        return [_qnn_partitioner(soc)]
    if backend == "portable":
        return []
    raise UserError(
        f"backend {backend!r} is not lowered through ExecuTorch; choose one of xnnpack, qnn, portable"
    )


def _qnn_partitioner(soc: str):  # pragma: no cover - needs the Qualcomm SDK
    from executorch.backends.qualcomm.partition.qnn_partitioner import QnnPartitioner
    from executorch.backends.qualcomm.serialization.qc_schema import QcomChipset
    from executorch.backends.qualcomm.utils.utils import (
        generate_htp_compiler_spec,
        generate_qnn_executorch_compiler_spec,
    )

    try:
        chipset = getattr(QcomChipset, soc)
    except AttributeError:
        raise UserError(f"unknown --soc {soc}; e.g. SM8650 (Snapdragon 8 Gen 3), SM8750, SM8550") from None
    specs = generate_qnn_executorch_compiler_spec(
        soc_model=chipset, backend_options=generate_htp_compiler_spec(use_fp16=True)
    )
    return QnnPartitioner(specs)


def lower(
    ep: ExportedProgram | dict[str, ExportedProgram],
    backend: str,
    soc: str,
    metadata: dict[str, Any],
    etrecord: bool = False,
):
    """to_edge_transform_and_lower with the backend's partitioner; returns the EdgeProgramManager.

    `etrecord`: ExecuTorch keeps what an ETRecord needs (`.to_executorch().get_etrecord()`).

    A {method: program} dict gives a multi-method .pte; XNNPACK stores equal weights once (NamedDataStore
    keys are SHA-256 of the bytes)."""
    import executorch.kernels.quantized  # noqa: F401 - out variants of q/dq ops a backend leaves outside
    from executorch.exir import EdgeCompileConfig, to_edge_transform_and_lower

    return to_edge_transform_and_lower(
        ep,
        partitioner=partitioners(backend, soc),
        compile_config=EdgeCompileConfig(_check_ir_validity=False),
        constant_methods={METADATA_METHOD: metadata_tensor(metadata)},
        generate_etrecord=etrecord,
    )


def to_executorch(edge):
    """The ExecutorchProgramManager; write it with `.write_to_file` (streams segments, no big copy)."""
    from executorch.exir import ExecutorchBackendConfig

    return edge.to_executorch(ExecutorchBackendConfig(extract_delegate_segments=True))
