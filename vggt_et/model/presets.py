"""Model presets: `vggt-1b` is the released checkpoint's configuration; smaller ones share its structure."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import ClassVar

from vggt_et.model.omega_config import OMEGA_PRESETS, VGGTOmegaConfig
from vggt_et.utils.errors import UserError

HEADS = ("camera", "depth", "point", "track")


@dataclass(frozen=True)
class TrackConfig:
    """Sizes of the optional track head (official values for VGGT-1B)."""

    features: int = 128
    hidden_size: int = 384
    depth: int = 6
    num_heads: int = 8
    num_virtual_tracks: int = 64
    corr_levels: int = 7
    corr_radius: int = 4
    iters: int = 4


@dataclass(frozen=True)
class VGGTConfig:
    """Every size that differs between presets; defaults are the official VGGT-1B configuration."""

    img_size: int = 518  # resolution of DINOv2's stored position-embedding grid
    patch_size: int = 14
    embed_dim: int = 1024
    depth: int = 24  # frame blocks = global blocks = depth
    num_heads: int = 16
    mlp_ratio: float = 4.0
    num_register_tokens: int = 4
    rope_freq: float = 100.0
    init_values: float = 0.01
    dino_depth: int = 24
    dino_num_heads: int = 16
    camera_trunk_depth: int = 4
    camera_num_heads: int = 16
    camera_iterations: int = 4
    dpt_features: int = 256
    dpt_out_channels: tuple[int, int, int, int] = (256, 512, 1024, 1024)
    dpt_layers: tuple[int, int, int, int] = (4, 11, 17, 23)
    enable_camera: bool = True
    enable_depth: bool = True
    enable_point: bool = True
    enable_track: bool = True
    track: TrackConfig = field(default_factory=TrackConfig)

    HEADS: ClassVar[tuple[str, ...]] = HEADS  # the heads this family has
    HEAD_MODULES: ClassVar[dict[str, str]] = {head: f"{head}_head" for head in HEADS}

    def __post_init__(self) -> None:
        head_dim = self.embed_dim // self.num_heads
        if self.embed_dim % self.num_heads or head_dim % 4:
            raise ValueError(f"embed_dim/num_heads must be a multiple of 4 for 2-D RoPE, got {head_dim}")
        if max(self.dpt_layers) >= self.depth:
            raise ValueError(f"dpt_layers {self.dpt_layers} reach beyond depth {self.depth}")

    def with_heads(self, *, track: bool | None = None, heads: Sequence[str] | None = None) -> VGGTConfig:
        """This config with the track head switched, or with exactly `heads` (names in HEADS) enabled."""
        config = self if track is None else replace(self, enable_track=track)
        if heads is None:
            return config
        unknown = sorted(set(heads) - set(HEADS))
        if unknown:
            raise ValueError(f"unknown head(s) {unknown}; heads are {', '.join(HEADS)}")
        return replace(config, **{f"enable_{name}": name in heads for name in HEADS})

    def to_dict(self) -> dict:
        return asdict(self)


ModelConfig = VGGTConfig | VGGTOmegaConfig

PRESETS: dict[str, ModelConfig] = {
    "vggt-1b": VGGTConfig(),
    # Same module tree at a fraction of the width and depth: compiles in seconds, for tests and demos.
    "tiny": VGGTConfig(
        img_size=70,
        embed_dim=64,
        depth=4,
        num_heads=4,
        dino_depth=2,
        dino_num_heads=4,
        camera_trunk_depth=1,
        camera_num_heads=4,
        dpt_features=32,
        dpt_out_channels=(16, 32, 64, 64),
        dpt_layers=(0, 1, 2, 3),
        track=TrackConfig(features=16, hidden_size=32, depth=1, num_heads=2, num_virtual_tracks=8),
    ),
    # Mid-size for benchmarks that should finish in minutes on a laptop-class CPU.
    "small": VGGTConfig(
        embed_dim=256,
        depth=8,
        num_heads=8,
        dino_depth=4,
        dino_num_heads=8,
        camera_trunk_depth=2,
        camera_num_heads=8,
        dpt_features=64,
        dpt_out_channels=(64, 128, 256, 256),
        dpt_layers=(1, 3, 5, 7),
        track=TrackConfig(features=32, hidden_size=96, depth=2, num_heads=4, num_virtual_tracks=16),
    ),
}


PRESETS.update(OMEGA_PRESETS)


def get_preset(name: str) -> ModelConfig:
    try:
        return PRESETS[name]
    except KeyError:
        raise UserError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}") from None
