"""The training loop: synthetic batches on the fly, `vggt_loss`, AdamW with linear warm-up and cosine decay,
per-head gradient clipping (as the official recipe clips aggregator and heads separately), progress through
logging and tqdm, a loss-curve PNG and safetensors checkpoints, each written atomically."""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

from vggt_et.data.synthetic import SceneVariety, synthetic_sample
from vggt_et.training.losses import LossConfig, normalize_scene, vggt_loss
from vggt_et.utils.files import atomic_write

logger = logging.getLogger(__name__)

TRAIN_HEADS = ("camera", "depth", "point")  # the track head has no loss here (the official one is unfinished)


@dataclass(frozen=True)
class TrainConfig:
    """One training run. Defaults follow the official recipe where it applies (AdamW, weight decay 0.05,
    5 % linear warm-up from 1e-8 then cosine decay to 1e-8, gradient norm 1 per part); the learning rate is
    higher than the official fine-tuning's 1e-4 because small models here start from random weights."""

    preset: str = "small"
    steps: int = 1000
    batch_size: int = 1
    lr: float = 3e-4
    min_lr: float = 1e-8
    warmup: float = 0.05  # share of the steps
    weight_decay: float = 0.05
    clip_norm: float = 1.0
    seed: int = 0
    scenes: int | None = None  # cycle this many fixed scenes (an overfitting check); None: a new one per step
    variety: SceneVariety = field(default_factory=SceneVariety)
    loss: LossConfig = field(default_factory=LossConfig)
    log_every: int = 10
    checkpoint_every: int = 0  # steps; 0: only at the end

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


@dataclass
class TrainResult:
    model: nn.Module
    history: list[dict[str, float]]  # per step: every loss part, "lr" and "seconds"
    seconds: float


def learning_rate(step: int, config: TrainConfig) -> float:
    """Linear from `min_lr` to `lr` over the warm-up steps, then half a cosine down to `min_lr` at the end."""
    warmup = max(1, round(config.warmup * config.steps)) if config.warmup > 0 else 0
    if step < warmup:
        return config.min_lr + (config.lr - config.min_lr) * step / warmup
    progress = (step - warmup) / max(1, config.steps - warmup)
    return config.min_lr + 0.5 * (config.lr - config.min_lr) * (1 + math.cos(math.pi * min(progress, 1.0)))


def make_batch(config: TrainConfig, step: int) -> dict[str, torch.Tensor]:
    """Batch `step`: `batch_size` samples sharing one view count, ground truth normalised (`normalize_scene`).

    Sample b of step t comes from the random stream (seed, t, b); with `scenes` set, t cycles through
    0..scenes-1, so the same scenes come back.
    """
    index = step % config.scenes if config.scenes else step
    low, high = config.variety.views
    views = int(np.random.default_rng([config.seed, index]).integers(low, high + 1))
    samples = [
        synthetic_sample([config.seed, index, b], config.variety, n_views=views)
        for b in range(config.batch_size)
    ]
    batch = {
        key: torch.stack([getattr(s, attr) for s in samples])
        for key, attr in (("images", "images"), ("depth", "depth"), ("extrinsics", "extrinsics"),
                          ("intrinsics", "intrinsics"), ("world_points", "world_points"), ("valid", "valid"))
    }  # fmt: skip
    batch["extrinsics"], batch["depth"], batch["world_points"] = normalize_scene(
        batch["extrinsics"], batch["depth"], batch["world_points"], batch["valid"]
    )
    return batch


def _clip_per_part(model: nn.Module, max_norm: float) -> None:
    """The aggregator and each head have their own gradient-norm budget."""
    for child in model.children():
        params = [p for p in child.parameters() if p.grad is not None]
        if params:
            torch.nn.utils.clip_grad_norm_(params, max_norm)


def evaluate(
    model: nn.Module, batch: dict[str, torch.Tensor], loss: LossConfig | None = None
) -> dict[str, float]:
    """The loss parts on one batch without training (the model's mode is kept for the call and restored)."""
    was_training = model.training
    model.train()  # training-mode outputs (pose_enc_list) without the eval-only entries
    try:
        with torch.no_grad():
            parts = vggt_loss(model(batch["images"]), batch, loss or LossConfig())
    finally:
        model.train(was_training)
    return {key: float(value) for key, value in parts.items()}


def train(
    model: nn.Module,
    config: TrainConfig,
    *,
    on_checkpoint: Callable[[nn.Module, int], None] | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train `model` in place for `config.steps` steps; return it with the per-step loss history.

    `on_checkpoint(model, step)` is called every `config.checkpoint_every` steps and after the last one.
    """
    from tqdm import tqdm

    torch.manual_seed(config.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.min_lr, weight_decay=config.weight_decay)
    history: list[dict[str, float]] = []
    start = time.perf_counter()
    model.train()
    bar = tqdm(range(config.steps), desc="train", unit="step", disable=not progress, dynamic_ncols=True)
    for step in bar:
        lr = learning_rate(step, config)
        for group in optimizer.param_groups:
            group["lr"] = lr
        batch = make_batch(config, step)
        parts = vggt_loss(model(batch["images"]), batch, config.loss)
        optimizer.zero_grad(set_to_none=True)
        parts["objective"].backward()
        if config.clip_norm > 0:
            _clip_per_part(model, config.clip_norm)
        optimizer.step()
        record = {key: float(value.detach()) for key, value in parts.items()}
        record.update(step=step, lr=lr, seconds=time.perf_counter() - start)
        history.append(record)
        bar.set_postfix(loss=f"{record['objective']:.4f}", lr=f"{lr:.2e}")
        if config.log_every and (step % config.log_every == 0 or step == config.steps - 1):
            logger.info(
                "step %d/%d loss %.4f (camera %.4f, depth %.4f, point %.4f) lr %.2e",
                step + 1, config.steps, record["objective"], record.get("loss_camera", 0.0),
                record.get("loss_reg_depth", 0.0), record.get("loss_reg_point", 0.0), lr,
            )  # fmt: skip
        last = step == config.steps - 1
        if on_checkpoint and (
            last or (config.checkpoint_every and (step + 1) % config.checkpoint_every == 0)
        ):
            on_checkpoint(model, step + 1)
    model.eval()
    return TrainResult(model, history, time.perf_counter() - start)


def save_checkpoint(
    model: nn.Module, path: str | os.PathLike, *, fp16: bool = False, metadata: dict[str, str] | None = None
) -> None:
    """The model's state dict (official tensor names) as safetensors, atomically; fp16 halves the file (the
    loader casts back to float32). `metadata` goes into the header as strings."""
    from safetensors.torch import save

    dtype = torch.float16 if fp16 else torch.float32
    state = {
        name: (t.to(dtype) if t.is_floating_point() else t).contiguous()
        for name, t in model.state_dict().items()
    }
    atomic_write(path, save(state, metadata=metadata or {}), user_path=False)


def plot_loss_curve(history: list[dict[str, float]], path: str | os.PathLike, title: str = "") -> None:
    """PNG: the objective (left) and the camera, depth and point errors (right, log scale) per step, raw
    (faint) and as a moving average over a fiftieth of the run (solid); written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [h["step"] + 1 for h in history]
    series = {
        "objective": [h["objective"] for h in history],
        "camera (T+R+FL/2)": [h.get("loss_camera", math.nan) for h in history],
        "depth (reg)": [h.get("loss_reg_depth", math.nan) for h in history],
        "point (reg)": [h.get("loss_reg_point", math.nan) for h in history],
    }
    window = max(1, len(history) // 50)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, names in ((axes[0], ["objective"]), (axes[1], [n for n in series if n != "objective"])):
        for name in names:
            values = torch.tensor(series[name], dtype=torch.float64)
            if torch.isnan(values).all():
                continue
            smooth = (
                torch.nn.functional.avg_pool1d(values[None, None], window, 1).flatten()
                if window > 1
                else values
            )
            line = ax.plot(steps, values.numpy(), alpha=0.25)[0]
            ax.plot(steps[window - 1 :], smooth.numpy(), color=line.get_color(), label=name)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend()
    axes[0].set_title(title or "training objective")
    axes[1].set_title("parts (mean per pixel / per element)")
    axes[1].set_yscale("log")
    try:
        fig.tight_layout()
        atomic_write(path, lambda handle: fig.savefig(handle, format="png", dpi=100), user_path=False)
    finally:
        plt.close(fig)
