"""Load and run a `.pte` with ExecuTorch's Python runtime, with inputs checked against the method's meta.

This is the reference the C++ runner is compared with, so it checks inputs the same way (shape and dtype
must match what the program was exported for) and reports problems as one-line `ProgramError`s.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

# ExecuTorch ScalarType codes (c10 numbering) -> NumPy dtypes the runner and tests exchange.
_SCALAR_TYPES: dict[int, np.dtype] = {
    0: np.dtype(np.uint8),
    1: np.dtype(np.int8),
    2: np.dtype(np.int16),
    3: np.dtype(np.int32),
    4: np.dtype(np.int64),
    5: np.dtype(np.float16),
    6: np.dtype(np.float32),
    7: np.dtype(np.float64),
    11: np.dtype(np.bool_),
}


# ExecuTorch's runtime Error codes (runtime/core/error.h): its Python errors print only the number.
_ERROR_NAMES: dict[int, str] = {
    0x01: "Internal",
    0x02: "InvalidState",
    0x03: "EndOfMethod",
    0x04: "AlreadyLoaded",
    0x10: "NotSupported",
    0x11: "NotImplemented",
    0x12: "InvalidArgument",
    0x13: "InvalidType",
    0x14: "OperatorMissing",
    0x15: "RegistrationExceedingMaxKernels",
    0x16: "RegistrationAlreadyRegistered",
    0x20: "NotFound",
    0x21: "MemoryAllocationFailed",
    0x22: "AccessFailed",
    0x23: "InvalidProgram",
    0x24: "InvalidExternalData",
    0x25: "OutOfResources",
    0x30: "DelegateInvalidCompatibility",
    0x31: "DelegateMemoryAllocationFailed",
    0x32: "DelegateInvalidHandle",
}


def name_error_codes(message: str) -> str:
    """'error: 0x:23' → 'error: InvalidProgram (0x23)'."""

    def named(match: re.Match) -> str:
        code = int(match.group(1), 16)
        return f"{_ERROR_NAMES.get(code, 'unknown error')} (0x{code:02x})"

    return re.sub(r"0x:?([0-9a-fA-F]+)", named, message)


class ProgramError(ValueError):
    """A `.pte` that cannot be loaded or inputs that do not fit it; the message names the fix."""


@dataclass(frozen=True)
class TensorSpec:
    """Shape and dtype of one method input or output, as the `.pte` records it (no names are stored)."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    nbytes: int


def _spec(name: str, info) -> TensorSpec:
    code = int(info.dtype())
    if code not in _SCALAR_TYPES:
        raise ProgramError(f"{name} has ExecuTorch scalar type {code}, which has no NumPy equivalent here")
    return TensorSpec(name, tuple(int(d) for d in info.sizes()), _SCALAR_TYPES[code], int(info.nbytes()))


def set_threads(threads: int) -> int:
    """Resize ExecuTorch's shared thread pool; returns the resulting count.

    Must run before a method is loaded: XNNPACK keeps the pool it was initialised with.
    """
    from executorch.extension.pybindings import _C

    if threads < 1:
        raise ProgramError(f"thread count must be >= 1, got {threads}")
    reset = getattr(_C, "_unsafe_reset_threadpool", None)
    if reset is None:
        raise ProgramError(
            "this executorch build cannot resize its thread pool (_unsafe_reset_threadpool missing)"
        )
    with native_stderr_captured():
        reset(threads)
    return thread_count()


@contextlib.contextmanager
def native_stderr_captured() -> Iterator[list[str]]:
    """Collect what C++ code prints straight to file descriptor 2 for the duration, instead of showing it.

    ExecuTorch's thread pool logs five lines of CPU probing when first created ("Failed to open midr file
    ..."), and its loader logs its own reason before raising; neither may break the CLI's one-line error
    contract. The yielded list receives the captured lines on exit, so a caller can fold the loader's
    reason into its own one-line message."""
    import sys
    import tempfile

    sys.stderr.flush()
    lines: list[str] = []
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            lines += capture.read().decode(errors="replace").splitlines()


def _native_reason(lines: list[str]) -> str:
    """The last native log line without its '[file.cpp:123] ' prefix, or ''."""
    for line in reversed(lines):
        if line.strip():
            return re.sub(r"^\[[^\]]*\]\s*", "", line.strip())
    return ""


def thread_count() -> int:
    """Threads in ExecuTorch's shared pool (what a freshly loaded method will use)."""
    from executorch.extension.pybindings import _C

    with native_stderr_captured():  # the first call creates the pool
        return int(_C._threadpool_get_thread_count())


class PteProgram:
    """One method of a `.pte`, loaded and ready to execute on NumPy arrays."""

    def __init__(
        self,
        path: str | os.PathLike,
        method: str = "forward",
        *,
        threads: int | None = None,
        enable_etdump: bool = False,
    ) -> None:
        from executorch.runtime import Runtime

        self.path = Path(path)
        if not self.path.is_file():
            raise ProgramError(f"cannot open program '{self.path}': check the path")
        if threads is not None:
            set_threads(threads)
        try:
            with native_stderr_captured() as native:
                self._program = Runtime.get().load_program(
                    self.path, enable_etdump=enable_etdump, debug_buffer_size=0
                )
        except RuntimeError as error:
            reason = _native_reason(native)
            raise ProgramError(
                f"cannot load program '{self.path}': {name_error_codes(str(error))}"
                f"{f' ({reason})' if reason else ''}; the file is truncated or not a .pte, re-export it"
            ) from None
        names = list(self._program.method_names)
        if method not in names:
            raise ProgramError(f"program has no method '{method}' (it has: {', '.join(names)})")
        try:
            self._method = self._program.load_method(method)
        except RuntimeError as error:
            raise ProgramError(
                f"cannot load method '{method}' of '{self.path}': {name_error_codes(str(error))}"
            ) from None
        meta = self._method.metadata
        self.method = method
        self.threads = thread_count()
        self.inputs = [_spec(f"input_{i}", meta.input_tensor_meta(i)) for i in range(meta.num_inputs())]
        self.outputs = [_spec(f"output_{i}", meta.output_tensor_meta(i)) for i in range(meta.num_outputs())]

    def check_inputs(self, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Contiguous copies of `arrays` after checking count, shape and dtype against the method."""
        if len(arrays) != len(self.inputs):
            raise ProgramError(f"method '{self.method}' takes {len(self.inputs)} inputs, got {len(arrays)}")
        checked = []
        for spec, array in zip(self.inputs, arrays, strict=True):
            array = np.asarray(array)
            if array.dtype != spec.dtype:
                raise ProgramError(
                    f"{spec.name} has dtype {array.dtype} but the program expects {spec.dtype}; "
                    "convert it with .astype()"
                )
            if tuple(array.shape) != spec.shape:
                raise ProgramError(
                    f"{spec.name} has shape {tuple(array.shape)} but the program expects "
                    f"{spec.shape}; the .pte was exported for that shape"
                )
            checked.append(np.ascontiguousarray(array))
        return checked

    def run(self, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Executes the method once; outputs are NumPy copies (the runtime reuses its buffers)."""
        tensors = [torch.from_numpy(array) for array in self.check_inputs(arrays)]
        outputs = self._method.execute(tensors)
        return [
            output.detach().numpy().copy() if isinstance(output, torch.Tensor) else output
            for output in outputs
        ]

    def write_etdump(self, path: str | os.PathLike) -> None:
        """Writes the profile recorded so far (needs `enable_etdump=True`)."""
        # The debug buffer (intermediate outputs) is empty unless debug_buffer_size was set; its file goes
        # beside the ETDump so nothing lands in the working directory.
        self._program.write_etdump_result_to_file(str(path), str(path) + ".debug")


def method_for_shapes(path: str | os.PathLike, shapes: Sequence[tuple[int, ...]]) -> str:
    """The method of the `.pte` whose inputs have `shapes` (e.g. the frame count of a program with one method
    per count), as the C++ runner picks it; ProgramError naming what the methods take if none does."""
    from executorch.runtime import Runtime

    path = Path(path)
    if not path.is_file():
        raise ProgramError(f"cannot open program '{path}': check the path")
    try:
        program = Runtime.get().load_program(path)
    except RuntimeError as error:
        raise ProgramError(f"cannot load program '{path}': {error}; re-export it") from None
    taken = []
    for name in sorted(program.method_names):
        meta = program.metadata(name)
        found = tuple(
            tuple(int(d) for d in meta.input_tensor_meta(i).sizes()) for i in range(meta.num_inputs())
        )
        if not found:
            continue
        if found == tuple(tuple(s) for s in shapes):
            return name
        taken.append(f"{name} {list(found[0])}")
    raise ProgramError(
        f"inputs of shape {[list(s) for s in shapes]} fit no method of '{path}' ({', '.join(taken)})"
    )


def load_program(
    path: str | os.PathLike, method: str = "forward", *, threads: int | None = None
) -> PteProgram:
    """Loads `method` of the `.pte` at `path`, optionally resizing the thread pool first."""
    return PteProgram(path, method, threads=threads)


def example_inputs(specs: Sequence[TensorSpec], seed: int = 0) -> list[np.ndarray]:
    """Deterministic inputs for `specs`: floats uniform in [0, 1) (images), integers zero."""
    generator = np.random.default_rng(seed)
    arrays = []
    for spec in specs:
        if spec.dtype.kind == "f":
            arrays.append(generator.random(spec.shape, dtype=np.float64).astype(spec.dtype))
        else:
            arrays.append(np.zeros(spec.shape, dtype=spec.dtype))
    return arrays
