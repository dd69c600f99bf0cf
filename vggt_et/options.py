"""Plain data every room shares: what a compile is asked for, and the tables that name outputs and programs.

A leaf module (it imports nothing of the package but `utils`, and no torch: the CLI reads it for --help): the CLI fills `CompileOptions`, the pipeline
and the Fisher stage read it, and no module needs to import another's driver for a constant. Checks that
need a model or a file (a group size for the chosen backend, a --fisher file's shape) live with the stage
that uses the value; the ones a value can make alone live here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from vggt_et.utils.errors import UserError

BACKENDS = ("xnnpack", "qnn", "portable", "tflite")
QUANT_SCHEMES = ("fp32", "fp16", "int8", "w4", "w4-fisher")
CALIBRATED_SCHEMES = ("int8", "w4", "w4-fisher")
DEFAULT_SOC = "SM8650"
DEFAULT_CALIB_SAMPLES = 8
# The product's default for phones: 64 MiB per attention score matrix (its softmax needs as much again),
# against the gigabytes of a multi-view global attention written out whole. The generic pass keeps its own
# library default (passes.bounded_attention.DEFAULT_ATTENTION_BUDGET); tests/test_layout.py checks they agree.
DEFAULT_ATTENTION_BUDGET = 64 * 2**20

EXPORT_PREFIX = "model."  # module paths inside the export wrapper: the eager model is its `model` attribute
METADATA_METHOD = "vggt_et_metadata"  # a .pte's constant method holding its JSON metadata as uint8


@dataclass(frozen=True)
class OutputGroup:
    """One `--outputs` name: the head that computes it and the tensors the program returns for it."""

    name: str
    head: str  # the model's `<head>_head` module
    tensors: tuple[str, ...]  # program outputs, in order; the first is the group's prediction

    @property
    def prediction(self) -> str:
        """The tensor a task loss (Fisher) is taken on: the prediction, not its confidence."""
        return self.tensors[0]


# The one head ↔ output ↔ task table, in program order (Fisher tasks are named like output groups).
OUTPUT_GROUPS: dict[str, OutputGroup] = {
    g.name: g
    for g in (
        OutputGroup("depth", "depth", ("depth", "depth_conf")),
        OutputGroup("points", "point", ("world_points", "world_points_conf")),
        OutputGroup("camera", "camera", ("pose_enc",)),
    )
}


def parse_outputs(outputs: str | Sequence[str], what: str = "output") -> tuple[str, ...]:
    """'depth,points' → ('depth', 'points') in program order, rejecting unknown names."""
    names = [n.strip() for n in (outputs.split(",") if isinstance(outputs, str) else outputs) if n.strip()]
    unknown = [n for n in names if n not in OUTPUT_GROUPS]
    if unknown or not names:
        raise UserError(
            f"unknown {what} {', '.join(unknown) or '(none)'}; choose from {', '.join(OUTPUT_GROUPS)}"
        )
    return tuple(n for n in OUTPUT_GROUPS if n in names)


def output_names(outputs: Sequence[str]) -> list[str]:
    """The program's output tensors for these groups, in order."""
    return [tensor for group in outputs for tensor in OUTPUT_GROUPS[group].tensors]


def heads_for(outputs: Sequence[str]) -> list[str]:
    """The model heads these output groups need (sorted, each once)."""
    return sorted({OUTPUT_GROUPS[o].head for o in outputs})


def frame_method(frames: int, max_frames: int) -> str:
    """Method name for `frames` in a program taking 1..max_frames: "forward" for the largest (so tools that
    run "forward" get the full program), "forward_<frames>" for the others."""
    return "forward" if frames == max_frames else f"forward_{frames}"


@dataclass(frozen=True)
class ProgramShape:
    """The fixed shape a program is compiled for: one scene of `frames` images of height × width."""

    frames: int = 2
    height: int = 518
    width: int = 518
    patch_size: int = 14

    def __post_init__(self) -> None:
        if self.frames < 1:
            raise UserError(f"--frames must be at least 1, got {self.frames}")
        for name, value in (("height", self.height), ("width", self.width)):
            if value < self.patch_size or value % self.patch_size:
                raise UserError(
                    f"--{name} {value} is not a positive multiple of {self.patch_size}; "
                    f"try {max(self.patch_size, round(value / self.patch_size) * self.patch_size)}"
                )

    @property
    def input_shape(self) -> tuple[int, int, int, int, int]:
        return (1, self.frames, 3, self.height, self.width)

    def program_input_shape(self, batch_dim: bool = True) -> tuple[int, ...]:
        return self.input_shape if batch_dim else self.input_shape[1:]


@dataclass(frozen=True)
class QuantSettings:
    """Knobs of the int8 / w4 recipes; None is the recipe's default. Each is refused with a scheme or
    backend that would not use it (pipeline/quantize.py), never ignored."""

    w4_group_size: int | None = None  # int4 weights per group of this many inputs; 0: per output channel
    keep_float: tuple[str, ...] | None = None  # module-path globs / 're:' regexes; replaces the defaults
    int8_activations: str | None = None  # "static" (calibrated) or "dynamic" (per token at run time)


@dataclass(frozen=True)
class W4FisherFlags:
    """The user's switches for w4-fisher's three techniques (fgq/w4_fisher.py resolves and checks them)."""

    fisher: str | None = None  # statistics from `vggt-et fisher`; None: computed during the compile
    w4_budget: float | None = None  # share of aggregator linear weights in 4 bit; None: 0.9
    rotation: bool = True
    mixed_precision: bool = True
    fisher_clip: bool = True

    def given(self) -> list[str]:
        """The flags that differ from their defaults, as the user typed them."""
        flags = {
            "--fisher": self.fisher is not None,
            "--w4-budget": self.w4_budget is not None,
            "--no-rotation": not self.rotation,
            "--no-mixed-precision": not self.mixed_precision,
            "--no-fisher-clip": not self.fisher_clip,
        }
        return [flag for flag, set_ in flags.items() if set_]


@dataclass
class CompileOptions:
    """Everything `vggt-et compile` is asked for (checked by pipeline.validation.validate before any work)."""

    preset: str = "vggt-1b"
    checkpoint: str | None = None
    random_weights: bool = False
    seed: int = 0
    backend: str = "xnnpack"
    quant: str = "fp32"
    frames: int = 2
    height: int = 518
    width: int = 518
    outputs: Sequence[str] = ("depth",)
    output: str = "model.pte"
    report: str | None = None
    soc: str | None = None  # --backend qnn: the Qualcomm SoC (default DEFAULT_SOC)
    calib_data: str | None = None
    calib_samples: int | None = None  # None: DEFAULT_CALIB_SAMPLES
    etrecord: str | None = None
    # Bytes one attention score matrix (and one DPT-head frame group) may take; None: attention left whole.
    attention_budget: int | None = DEFAULT_ATTENTION_BUDGET
    # One program taking any frame count 1..max_frames (one method each; replaces `frames`). None: `frames` only.
    max_frames: int | None = None
    stop_before_lowering: bool = False
    quantization: QuantSettings = field(default_factory=QuantSettings)
    w4_fisher: W4FisherFlags = field(default_factory=W4FisherFlags)

    @property
    def calibration_count(self) -> int:
        """--calib-samples as given, or the default."""
        return DEFAULT_CALIB_SAMPLES if self.calib_samples is None else self.calib_samples

    @property
    def qnn_soc(self) -> str:
        return self.soc or DEFAULT_SOC
