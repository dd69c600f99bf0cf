"""Our VGGT-Ω against the official implementation, same weights, float32 on CPU, in one run.

    git clone https://github.com/facebookresearch/vggt-omega /tmp/vggt-omega     # not part of this repo
    python benchmarks/omega_vs_official.py --official /tmp/vggt-omega --config tiny
    python benchmarks/omega_vs_official.py --official /tmp/vggt-omega --config 1b --shape 2x64x96
    python benchmarks/omega_vs_official.py --official /tmp/vggt-omega --checkpoint model.pt --shape 2x512x384

Without --checkpoint both models get the same seeded random weights, chosen so that every path matters
(LayerScales in [0.2, 1] instead of 1e-5, non-zero K biases behind the 0 of `bias_mask`). The official
forward autocasts its aggregator to bf16 on CUDA; here that context is replaced by a no-op, nothing else
of theirs is changed. `tiny`/`medium` build the official modules with our sizes where theirs are
hard-coded (backbone depth and heads); `1b` is their own `VGGTOmega()`. Prints rel. L2 per output.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
import time
from dataclasses import replace

import torch
from torch import nn

from _common import machine
from vggt_et.model.omega_config import OMEGA_PRESETS, VGGTOmegaConfig
from vggt_et.model.vggt_omega import VGGTOmega

OUTPUTS = ("pose_enc", "depth", "depth_conf", "camera_and_register_tokens")
CONFIGS = {
    # The official camera head hard-codes 4 trunk blocks of 16 heads: ours is sized to match.
    "tiny": replace(OMEGA_PRESETS["vggt-omega-tiny"], camera_trunk_depth=4, camera_num_heads=16),
    "medium": VGGTOmegaConfig(
        embed_dim=256,
        depth=8,
        num_heads=8,
        register_attention_layers=(2, 6),
        dino_depth=4,
        dino_num_heads=8,
        dpt_features=64,
        dpt_out_channels=(64, 128, 256, 256),
        dpt_layers=(1, 3, 5, 7),
    ),
    "1b": OMEGA_PRESETS["vggt-omega-1b"],
}


def official_model(config: VGGTOmegaConfig, full_size: bool) -> nn.Module:
    """The official VGGTOmega, CPU float32: their constructor for 1b, their modules at our sizes otherwise."""
    import vggt_omega.models.aggregator as agg
    import vggt_omega.models.vggt_omega as top
    from vggt_omega.models.heads import CameraHead, DenseHead
    from vggt_omega.models.layers.vision_transformer import DinoVisionTransformer

    top.torch.autocast = lambda *args, **kwargs: contextlib.nullcontext()  # CUDA bf16 only; CPU fp32 here
    top.torch.cuda.is_bf16_supported = lambda *args, **kwargs: False
    if full_size:
        return top.VGGTOmega().eval()
    c = config

    def backbone(patch_size: int, embed_dim: int) -> nn.Module:
        model = DinoVisionTransformer(
            patch_size=patch_size,
            embed_dim=embed_dim,
            depth=c.dino_depth,
            num_heads=c.dino_num_heads,
            ffn_ratio=c.mlp_ratio,
            pos_embed_rope_base=c.rope_base,
            pos_embed_rope_normalize_coords="max",
            pos_embed_rope_dtype="fp32",
            layerscale_init=c.init_values,
            norm_layer="layernormbf16",
            n_storage_tokens=c.dino_storage_tokens,
            mask_k_bias=True,
        )
        model.init_weights()
        return model

    agg._build_patch_embed = backbone
    model = top.VGGTOmega.__new__(top.VGGTOmega)
    nn.Module.__init__(model)
    model.aggregator = agg.Aggregator(
        patch_size=c.patch_size,
        embed_dim=c.embed_dim,
        depth=c.depth,
        num_heads=c.num_heads,
        mlp_ratio=c.mlp_ratio,
        num_register_tokens=c.num_register_tokens,
        register_attention_block_indices=list(c.register_attention_layers),
        cached_layer_indices=tuple(c.cached_layers),
    )
    model.camera_head = CameraHead(dim_in=2 * c.embed_dim)
    model.dense_head = DenseHead(
        dim_in=2 * c.embed_dim,
        patch_size=c.patch_size,
        features=c.dpt_features,
        out_channels=list(c.dpt_out_channels),
        intermediate_layer_idx=list(c.dpt_layers),
    )
    model.text_alignment_head = None
    return model.eval()


def randomise_(model: nn.Module, seed: int) -> None:
    """In place: every weight O(1)-relevant. LayerScales in [0.2, 1], norms near (1, 0), K biases non-zero
    (the mask must remove them), weights ~ N(0, 1/fan_in); buffers (RoPE periods) kept."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=generator)
            if name.endswith("gamma"):
                p.copy_(0.2 + 0.8 * torch.rand(p.shape, generator=generator))
            elif "norm" in name.rsplit(".", 2)[-2]:
                p.copy_(1 + 0.1 * noise if name.endswith("weight") else 0.1 * noise)
            elif name.endswith("qkv.bias"):
                p.copy_(0.5 * noise)
            elif p.dim() > 1:
                p.copy_(noise / math.sqrt(p[0].numel()))
            else:
                p.copy_(0.2 * noise)


def rel_l2(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    diff = (ours.double() - theirs.double()).norm()
    return float(diff / theirs.double().norm().clamp_min(1e-30))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--official", required=True, help="Folder holding the official `vggt_omega` package.")
    parser.add_argument("--config", choices=CONFIGS, default="tiny")
    parser.add_argument("--checkpoint", default=None, help="Official weights (implies --config 1b).")
    parser.add_argument("--shape", action="append", help="FRAMESxHxW (H, W multiples of 16); repeatable.")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    sys.path.insert(0, args.official)
    torch.set_grad_enabled(False)
    name = "1b" if args.checkpoint else args.config
    config = CONFIGS[name]
    shapes = [tuple(int(v) for v in s.split("x")) for s in (args.shape or ["2x48x80", "3x64x32"])]

    t0 = time.perf_counter()
    ours = VGGTOmega(config, seed=args.seed).eval()
    if args.checkpoint:
        from vggt_et.model.loading import read_state_dict

        state = {k: v.float() for k, v in read_state_dict(args.checkpoint).items()}
    else:
        randomise_(ours, args.seed)
        state = ours.state_dict()  # with the bias_mask entries the official model needs
    theirs = official_model(config, full_size=name == "1b")
    theirs.load_state_dict(state, strict=True)
    ours.load_state_dict(state, strict=True)  # folds the masks (a no-op for our own random weights)
    del state
    print(f"built and loaded both in {time.perf_counter() - t0:.0f} s", file=sys.stderr)

    print(
        f"VGGT-Ω ours vs official ({name}, {'checkpoint' if args.checkpoint else 'random weights'}), "
        f"float32 CPU, on {machine()}"
    )
    print(f"{'frames x H x W':<16}" + "".join(f"{k:>28}" for k in OUTPUTS))
    for frames, height, width in shapes:
        images = torch.rand(1, frames, 3, height, width, generator=torch.Generator().manual_seed(1))
        a, b = ours(images), theirs(images)
        row = "".join(f"{rel_l2(a[k], b[k]):>28.2e}" for k in OUTPUTS)
        print(f"{f'{frames}x{height}x{width}':<16}{row}")


if __name__ == "__main__":
    main()
