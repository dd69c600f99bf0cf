"""TFLite comparison target through litert-torch (optional extra: `pip install -e .[tflite]`)."""

from __future__ import annotations

import numpy as np

from vggt_et.utils.errors import UserError


def require_litert():
    try:
        import litert_torch
    except ImportError:
        raise UserError(
            "--backend tflite needs litert-torch: pip install -e '.[tflite]' (install it together with the "
            "pinned torch/executorch in one pip command)"
        ) from None
    return litert_torch


def convert_tflite(ep, example: np.ndarray | object) -> bytes:
    """Convert the (pass-rewritten) exported program's module with litert-torch; returns .tflite bytes."""
    litert = require_litert()
    module = ep.module()
    edge = litert.convert(module, (example,))
    content = edge.model_content()  # already bytes: a second copy of a 1-billion-parameter model hurts
    return content if isinstance(content, bytes) else bytes(content)


class TfliteProgram:
    """A .tflite file loaded once in the LiteRT interpreter (tensors allocated once), run many times."""

    def __init__(self, path: str) -> None:
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            raise UserError(
                "running .tflite files needs ai-edge-litert: pip install -e '.[tflite]'"
            ) from None
        self.interpreter = Interpreter(model_path=str(path))
        self.interpreter.allocate_tensors()

    def run(self, images: np.ndarray) -> list[np.ndarray]:
        """[1, S, 3, H, W] images in, the program's outputs out."""
        interpreter = self.interpreter
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], images.astype(np.float32))
        interpreter.invoke()
        return [interpreter.get_tensor(d["index"]) for d in interpreter.get_output_details()]


def run_tflite(path: str, images: np.ndarray) -> list[np.ndarray]:
    """Run a .tflite file once with the LiteRT interpreter on [1, S, 3, H, W] images."""
    return TfliteProgram(path).run(images)
