"""Building presets and loading official checkpoints (.safetensors or .pt state dicts)."""

from __future__ import annotations

import logging
import pickle
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from vggt_et.model.builtin import resolve_checkpoint
from vggt_et.model.omega_config import VGGTOmegaConfig
from vggt_et.model.presets import PRESETS, ModelConfig, get_preset
from vggt_et.model.vggt import VGGT
from vggt_et.model.vggt_omega import VGGTOmega
from vggt_et.utils.errors import UserError

logger = logging.getLogger(__name__)

Model = VGGT | VGGTOmega


def model_from_config(config: ModelConfig, seed: int | None = None) -> Model:
    """VGGT or VGGT-Ω, whichever family `config` describes."""
    return VGGTOmega(config, seed) if isinstance(config, VGGTOmegaConfig) else VGGT(config, seed)


def configure(
    preset: str, *, track_head: bool | None = None, heads: Sequence[str] | None = None
) -> ModelConfig:
    """The preset's config with the chosen heads; a head the family lacks is a user error."""
    try:
        return get_preset(preset).with_heads(track=track_head, heads=heads)
    except ValueError as exc:
        raise UserError(f"preset {preset!r}: {exc}") from None


FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def build_model(
    preset: str,
    *,
    track_head: bool | None = None,
    heads: Sequence[str] | None = None,
    device: str | torch.device = "cpu",
) -> Model:
    """An un-loaded model of `preset` (default init). On `meta`, no memory is allocated."""
    config = configure(preset, track_head=track_head, heads=heads)
    with torch.device(device):
        return model_from_config(config)


def expected_shapes(
    preset: str, *, track_head: bool | None = None, heads: Sequence[str] | None = None
) -> dict[str, tuple[int, ...]]:
    """Every state-dict tensor name of `preset` with its shape, computed on the meta device."""
    model = build_model(preset, track_head=track_head, heads=heads, device="meta")
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def checkpoint_format(path: Path) -> str:
    """'safetensors', 'zip' (torch.save since 1.6) or 'legacy' (older torch.save), from the content: a
    file's extension says nothing reliable (safetensors files are shipped as .bin, .pt as .pth)."""
    with open(path, "rb") as handle:
        head = handle.read(9)
    if head[:4] == b"PK\x03\x04":
        return "zip"
    if len(head) == 9 and head[8:9] == b"{":
        header_bytes = int.from_bytes(head[:8], "little")
        if 0 < header_bytes <= path.stat().st_size - 8:
            return "safetensors"
    return "legacy"


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a .safetensors file or an official .pt state dict (loaded with weights_only=True).

    Zip checkpoints are memory-mapped (VGGT-1B's weights are read once, not copied); the legacy format
    cannot be mapped and is read whole. weights_only refuses anything but tensors and plain containers.
    `builtin:NAME` reads the shipped checkpoint NAME (vggt_et.model.builtin)."""
    from vggt_et.utils.checks import input_file

    path = input_file(
        resolve_checkpoint(path), "--checkpoint", "checkpoint file (VGGT-1B's model.safetensors or model.pt)"
    )
    try:
        kind = checkpoint_format(path)
        if kind == "safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=kind == "zip")
    except pickle.UnpicklingError as exc:
        if "Unsupported global" not in str(exc):  # not a pickle of objects, just not a checkpoint
            raise UserError(f"cannot read checkpoint {path}: not a safetensors or torch.save file") from None
        raise UserError(
            f"checkpoint {path} holds Python objects other than tensors, which are not loaded (unsafe); "
            "pass a state dict of tensors (.safetensors or torch.save(model.state_dict()))"
        ) from None
    except Exception as exc:  # a corrupt or foreign file: one line, not a traceback from deep inside
        first = (str(exc).splitlines() or [""])[0]
        raise UserError(
            f"cannot read checkpoint {path}: {type(exc).__name__}: {first}; pass a .safetensors file "
            "or a torch.save'd state dict of tensors"
        ) from None
    if isinstance(state, Mapping):
        for key in ("model", "state_dict"):
            if key in state and isinstance(state[key], Mapping):
                state = state[key]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"checkpoint {path} is not a state dict of tensors")
    return dict(state)


def checkpoint_layout(path: str | Path) -> dict[str, torch.Tensor]:
    """The checkpoint's tensor names, shapes and dtypes as meta tensors, cheaply: a safetensors header or
    a memory-mapped zip checkpoint is read without its data (legacy files are read whole)."""
    path = Path(resolve_checkpoint(path))
    if checkpoint_format(path) == "safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as handle:
                layout = {}
                for name in handle.keys():
                    part = handle.get_slice(name)
                    dtype = getattr(torch, _SAFETENSORS_DTYPES.get(part.get_dtype(), "uint8"))
                    layout[name] = torch.empty(part.get_shape(), dtype=dtype, device="meta")
                return layout
        except Exception as exc:
            raise UserError(f"cannot read checkpoint {path}: {type(exc).__name__}: {exc}") from None
    return {k: torch.empty(v.shape, dtype=v.dtype, device="meta") for k, v in read_state_dict(path).items()}


_SAFETENSORS_DTYPES = {
    "F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
    "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool",
}  # fmt: skip


def default_heads(preset: str, track_head: bool = False) -> list[str]:
    """The heads `load_model` builds when none are named: all of the preset's, the track head on request."""
    return [h for h in get_preset(preset).HEADS if h != "track" or track_head]


def check_model_source(
    preset: str,
    checkpoint: str | Path | None,
    random_weights: bool,
    heads: Sequence[str] | None = None,
) -> None:
    """Everything `load_model` would refuse about --checkpoint / --random-weights, before any heavy work
    (the checkpoint's tensor names and shapes are checked without reading its weights; a `builtin:NAME`
    must exist, fit `preset` and be shipped). `heads` defaults to `load_model`'s."""
    from vggt_et.utils.checks import model_source

    get_preset(preset)
    path = checkpoint if checkpoint is None or random_weights else resolve_checkpoint(checkpoint, preset)
    model_source(path, random_weights)
    if path is not None:
        layout = checkpoint_layout(path)
        heads = default_heads(preset) if heads is None else heads
        check_state_dict(layout, preset, heads=heads, source=f"checkpoint {checkpoint}", quiet=True)


def _mismatches(state: Mapping[str, torch.Tensor], expected: Mapping[str, tuple[int, ...]]) -> list[str]:
    problems = [f"missing {k}" for k in expected if k not in state]
    problems += [f"unexpected {k}" for k in state if k not in expected]
    problems += [
        f"{k} has shape {list(state[k].shape)}, preset wants {list(shape)}"
        for k, shape in expected.items()
        if k in state and tuple(state[k].shape) != shape
    ]
    return problems


def fitting_preset(state: Mapping[str, torch.Tensor], heads: Sequence[str] | None = None) -> str | None:
    """The built-in preset whose tensors match `state` (with `heads`, or with or without track head)."""
    for name, config in PRESETS.items():
        if heads is not None:
            if not set(heads) <= set(config.HEADS):
                continue
            choices = [{"heads": heads}]
        elif "track" in config.HEADS:
            choices = [{"track_head": True}, {"track_head": False}]
        else:
            choices = [{}]
        if any(not _mismatches(state, expected_shapes(name, **choice)) for choice in choices):
            return name
    return None


def check_state_dict(
    state: Mapping[str, torch.Tensor],
    preset: str,
    *,
    heads: Sequence[str],
    source: str = "checkpoint",
    quiet: bool = False,
) -> dict[str, torch.Tensor]:
    """Drop tensors of heads that are off (with a notice); fail naming the first offenders otherwise."""
    state = dict(state)
    config = get_preset(preset)
    for head in sorted(set(config.HEADS) - set(heads)):
        prefix = f"{config.HEAD_MODULES[head]}."
        dropped = [k for k in state if k.startswith(prefix)]
        if dropped:
            if not quiet:
                logger.info("ignoring %d %s-head tensors (%s head is off)", len(dropped), head, head)
            state = {k: v for k, v in state.items() if not k.startswith(prefix)}
    problems = _mismatches(state, expected_shapes(preset, heads=heads))
    if problems:
        fits = fitting_preset(state, heads) or fitting_preset(state)
        hint = f"it fits preset {fits!r}" if fits else "no built-in preset fits it"
        more = f" (+{len(problems) - 3} more)" if len(problems) > 3 else ""
        raise UserError(f"{source} does not fit preset {preset!r}: {'; '.join(problems[:3])}{more}; {hint}")
    unset = [
        k
        for k, v in state.items()
        if k.endswith("bias_mask") and v.device.type != "meta" and not bool(torch.isfinite(v).all())
    ]
    if unset:
        raise UserError(
            f"{source}: {unset[0]} holds NaN/inf (+{len(unset) - 1} more): it was saved before the "
            "official weight init ran; save the trained model's state dict instead"
        )
    bad = sorted({str(v.dtype) for v in state.values() if v.dtype not in FLOAT_DTYPES})
    if bad:
        raise UserError(
            f"{source} holds non-float tensors ({', '.join(bad)}); expected fp32/fp16/bf16 weights"
        )
    return state


def load_model(
    preset: str = "vggt-1b",
    checkpoint: str | Path | None = None,
    *,
    random_weights: bool = False,
    seed: int = 0,
    track_head: bool = False,
    heads: Sequence[str] | None = None,
) -> Model:
    """Eager model in eval mode, float32, with the checkpoint's weights or a seeded random init.

    The track head is off by default: no compiled program uses it, and it costs 66 M parameters.
    `heads` (subset of camera, depth, point, track) overrides that and builds only those heads, so a
    depth-only compile never holds the other heads' weights.

    With a checkpoint the model is built on `meta` and the loaded tensors are assigned, so loading
    VGGT-1B needs the weights' memory once, not twice. `checkpoint="builtin:NAME"` loads a checkpoint
    shipped with the package (`vggt_et.model.builtin.BUILTINS`), refused if it does not fit `preset`.
    """
    if (checkpoint is None) == (not random_weights):
        raise UserError("give either a checkpoint or random_weights=True (--checkpoint F | --random-weights)")
    if heads is None:
        heads = default_heads(preset, track_head)
    if checkpoint is None:
        model = model_from_config(configure(preset, heads=heads), seed=seed)
    else:
        path = resolve_checkpoint(checkpoint, preset)
        state = check_state_dict(
            read_state_dict(path), preset, heads=heads, source=f"checkpoint {checkpoint}"
        )
        state = {k: v.to(torch.float32) for k, v in state.items()}
        model = build_model(preset, heads=heads, device="meta")
        model.load_state_dict(state, strict=True, assign=True)
        model.aggregator.reset_normalization()
    return model.eval()
