"""VGGT-Ω sizes: `vggt-omega-1b` is the released checkpoint's configuration (facebookresearch/vggt-omega)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import ClassVar

OMEGA_HEADS = ("camera", "depth")


@dataclass(frozen=True)
class VGGTOmegaConfig:
    """Every size that differs between VGGT-Ω presets; defaults are the released VGGT-Ω (1.14 B)."""

    patch_size: int = 16
    embed_dim: int = 1024
    depth: int = 24  # frame blocks = inter-frame blocks = depth
    num_heads: int = 16
    mlp_ratio: float = 4.0
    num_register_tokens: int = 16
    register_attention_layers: tuple[int, ...] = (2, 6, 9, 14, 20)
    rope_base: float = 100.0
    init_values: float = 1e-5  # LayerScale init of every block (backbone, aggregator, camera trunk)
    dino_depth: int = 24
    dino_num_heads: int = 16
    dino_storage_tokens: int = 4
    camera_trunk_depth: int = 4
    camera_num_heads: int = 16
    dpt_features: int = 256
    dpt_out_channels: tuple[int, int, int, int] = (256, 512, 1024, 1024)
    dpt_layers: tuple[int, int, int, int] = (4, 11, 17, 23)
    enable_camera: bool = True
    enable_depth: bool = True

    HEADS: ClassVar[tuple[str, ...]] = OMEGA_HEADS  # the heads this family has
    HEAD_MODULES: ClassVar[dict[str, str]] = {"camera": "camera_head", "depth": "dense_head"}

    def __post_init__(self) -> None:
        head_dim = self.embed_dim // self.num_heads
        if self.embed_dim % self.num_heads or head_dim % 4:
            raise ValueError(f"embed_dim/num_heads must be a multiple of 4 for 2-D RoPE, got {head_dim}")
        if self.patch_size % 4:
            raise ValueError(f"the dense head decodes from 1/4 scale: patch_size {self.patch_size} % 4 != 0")
        layers = (*self.dpt_layers, *self.register_attention_layers)
        if max(layers) >= self.depth or min(layers) < 0:
            raise ValueError(f"layer indices {layers} fall outside depth {self.depth}")

    @property
    def cached_layers(self) -> tuple[int, ...]:
        """Aggregator layers whose tokens the heads read: the dense head's, and the last (camera head)."""
        return tuple(sorted({*self.dpt_layers, self.depth - 1}))

    @property
    def prefix_tokens(self) -> int:
        """Camera + register tokens in front of each frame's patch tokens."""
        return 1 + self.num_register_tokens

    def with_heads(self, *, track: bool | None = None, heads: Sequence[str] | None = None) -> VGGTOmegaConfig:
        """This config with exactly `heads` enabled (VGGT-Ω has camera and depth heads only)."""
        if track:
            raise ValueError("VGGT-Ω has no track head")
        if heads is None:
            return self
        unknown = sorted(set(heads) - set(OMEGA_HEADS))
        if unknown:
            raise ValueError(
                f"VGGT-Ω has no {', '.join(unknown)} head; its heads are {', '.join(OMEGA_HEADS)}"
            )
        return replace(self, **{f"enable_{name}": name in heads for name in OMEGA_HEADS})

    def to_dict(self) -> dict:
        return asdict(self)


OMEGA_PRESETS: dict[str, VGGTOmegaConfig] = {
    "vggt-omega-1b": VGGTOmegaConfig(),
    # Same module tree at a fraction of the width and depth: for tests and demos. LayerScale starts at 0.5
    # (not 1e-5) so that random-weight blocks change the tokens and tests see every path.
    "vggt-omega-tiny": VGGTOmegaConfig(
        init_values=0.5,
        embed_dim=64,
        depth=4,
        num_heads=4,
        num_register_tokens=3,
        register_attention_layers=(1,),
        dino_depth=2,
        dino_num_heads=4,
        dino_storage_tokens=2,
        camera_trunk_depth=1,
        camera_num_heads=4,
        dpt_features=32,
        dpt_out_channels=(16, 32, 64, 64),
        dpt_layers=(0, 1, 2, 3),
    ),
}
