"""Diagonal Fisher statistics of block outputs, FGQ style, to weight calibration error per channel.

Why: not every channel of a block's output matters equally to the tasks. FGQ measures, without ground truth,
the squared gradient of each task output's sum w.r.t. every block output channel; calibration then weights the
block-output reconstruction error with it. Raw statistics are kept per task so they can be inspected and
re-normalised; ``combined_weights`` applies the FGQ normalisation.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.utils.checkpoint
from torch import nn
from tqdm import tqdm

from vggt_et.utils.files import atomic_output_path, atomic_write

FISHER_FLOOR = 0.01


def resolve_modules(model: nn.Module, modules: Sequence[nn.Module | str]) -> list[tuple[str, nn.Module]]:
    """Turn modules or dotted names into (name, module) pairs, failing clearly on strangers."""
    names_by_id = {id(module): name for name, module in model.named_modules()}
    resolved = []
    for item in modules:
        if isinstance(item, str):
            try:
                resolved.append((item, model.get_submodule(item)))
            except AttributeError as error:
                raise ValueError(f"model has no submodule named {item!r}") from error
        elif isinstance(item, nn.Module):
            if id(item) not in names_by_id:
                raise ValueError(f"module {type(item).__name__} is not a submodule of the model")
            resolved.append((names_by_id[id(item)], item))
        else:
            raise ValueError(f"expected nn.Module or str, got {type(item).__name__}")
    return resolved


def call_model(model: nn.Module, sample: Any) -> Any:
    """Samples are a tensor, a tuple of positional arguments, or a dict of keyword arguments."""
    if isinstance(sample, Mapping):
        return model(**sample)
    if isinstance(sample, (tuple, list)):
        return model(*sample)
    return model(sample)


def primary_tensor(output: Any) -> torch.Tensor:
    """The tensor a block hands on: the output itself, or the first element of a tuple/list."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise ValueError(
        f"block output must be a tensor or a tuple starting with one, not {type(output).__name__}"
    )


def _replace_primary(output: Any, tensor: torch.Tensor) -> Any:
    if isinstance(output, torch.Tensor):
        return tensor
    return type(output)([tensor, *output[1:]])


@dataclass
class FisherStats:
    """Raw diagonal Fisher [T, L, C]: task x block x output channel, averaged over samples."""

    raw: torch.Tensor
    task_names: list[str]
    block_names: list[str]
    num_samples: int
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.raw.dim() != 3:
            raise ValueError(f"raw Fisher must be [T, L, C], got shape {tuple(self.raw.shape)}")
        if self.raw.shape[0] != len(self.task_names) or self.raw.shape[1] != len(self.block_names):
            raise ValueError(
                f"raw Fisher shape {tuple(self.raw.shape)} does not match {len(self.task_names)} tasks "
                f"and {len(self.block_names)} blocks"
            )

    def per_task_normalised(self) -> torch.Tensor:
        """Each task divided by its own mean over blocks and channels, so tasks of any scale count equally."""
        means = self.raw.mean(dim=(1, 2), keepdim=True)
        return self.raw / means.clamp_min(torch.finfo(self.raw.dtype).tiny)

    def combined_weights(self, floor: float = FISHER_FLOOR) -> torch.Tensor:
        """FGQ weights [L, C]: per-task normalised, summed over tasks, block mean rescaled to 1, floored."""
        summed = self.per_task_normalised().sum(dim=0)
        per_block = summed / summed.mean(dim=1, keepdim=True).clamp_min(torch.finfo(summed.dtype).tiny)
        return per_block.clamp_min(floor)

    def block_importance(self) -> torch.Tensor:
        """[L]: mean per-task-normalised Fisher per block, mean 1; combined weights hide block scale."""
        summed = self.per_task_normalised().sum(dim=0).mean(dim=1)
        return summed / summed.mean().clamp_min(torch.finfo(summed.dtype).tiny)

    def save(self, path: str) -> None:
        """Plain tensors and JSON text only, so ``torch.load(weights_only=True)`` can read it back."""
        try:
            metadata_json = json.dumps(self.metadata, sort_keys=True)
        except TypeError as error:
            raise ValueError(f"Fisher metadata must be JSON-serialisable: {error}") from error
        payload = {
            "format": "vggt_et.fisher/1",
            "raw": self.raw.detach().cpu().contiguous(),
            "task_names": list(self.task_names),
            "block_names": list(self.block_names),
            "num_samples": int(self.num_samples),
            "metadata_json": metadata_json,
        }
        atomic_write(path, lambda f: torch.save(payload, f), user_path=False)

    @classmethod
    def load(cls, path: str) -> FisherStats:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(payload, dict) or payload.get("format") != "vggt_et.fisher/1":
            raise ValueError(f"{path} is not a Fisher statistics file written by FisherStats.save")
        return cls(
            raw=payload["raw"],
            task_names=list(payload["task_names"]),
            block_names=list(payload["block_names"]),
            num_samples=int(payload["num_samples"]),
            metadata=json.loads(payload["metadata_json"]),
        )


@contextlib.contextmanager
def recomputed_in_backward(modules: Sequence[nn.Module]) -> Iterator[None]:
    """Run each module's forward under non-reentrant activation checkpointing for the duration.

    The wrapper sits inside `nn.Module.__call__`, so forward hooks still see (and may replace) the
    module's output once; the recomputation in backward calls the original forward and no hooks.
    """
    patched = []
    for module in modules:
        own = module.__dict__.get("forward")
        forward = module.forward

        def checkpointed(*args: Any, _forward: Callable[..., Any] = forward, **kwargs: Any) -> Any:
            return torch.utils.checkpoint.checkpoint(_forward, *args, use_reentrant=False, **kwargs)

        module.forward = checkpointed
        patched.append((module, own))
    try:
        yield
    finally:
        for module, own in patched:
            if own is None:
                del module.forward
            else:
                module.forward = own


def compute_block_fisher(
    model: nn.Module,
    block_modules: Sequence[nn.Module | str],
    task_losses: Mapping[str, Callable[[Any], torch.Tensor]],
    samples: Iterable[Any],
    *,
    progress: bool = True,
    metadata: Mapping[str, Any] | None = None,
    recompute_blocks: bool = True,
) -> FisherStats:
    """Squared gradients of each task output's sum w.r.t. each block output, summed over all but channels.

    ``task_losses[t](outputs)`` returns task t's output (summed here if not scalar). Weights are frozen during
    the pass (restored afterwards); gradients flow through activations only. Blocks whose outputs the tasks
    do not depend on get zeros. The statistic is averaged over the samples (each sample one forward).
    ``recompute_blocks`` keeps only each block's inputs for the backward and recomputes its insides there
    (activation checkpointing): the attention maps of every block are never held at once, for about a
    third more compute. The statistics are the same either way.
    """
    if not task_losses:
        raise ValueError("task_losses is empty: need at least one task output")
    blocks = resolve_modules(model, block_modules)
    if not blocks:
        raise ValueError("block_modules is empty")
    task_names = list(task_losses)
    captured: list[torch.Tensor | None] = [None] * len(blocks)

    def make_hook(index: int) -> Callable[..., Any]:
        def hook(_module: nn.Module, _inputs: Any, output: Any) -> Any:
            tensor = primary_tensor(output)
            if not tensor.requires_grad:
                # Nothing upstream needs grad (weights frozen): make this activation the leaf of the graph.
                tensor = tensor.detach().requires_grad_(True)
                captured[index] = tensor
                return _replace_primary(output, tensor)
            captured[index] = tensor
            return None

        return hook

    frozen = [(p, p.requires_grad) for p in model.parameters()]
    handles = [module.register_forward_hook(make_hook(i)) for i, (_, module) in enumerate(blocks)]
    totals: torch.Tensor | None = None
    count = 0
    recomputed = [module for _, module in blocks] if recompute_blocks else []
    try:
        for p, _ in frozen:
            p.requires_grad_(False)
        with recomputed_in_backward(recomputed), torch.enable_grad():
            for sample in tqdm(samples, desc="fisher", unit="sample", file=sys.stderr, disable=not progress):
                captured[:] = [None] * len(blocks)
                outputs = call_model(model, sample)
                missing = [blocks[i][0] for i, t in enumerate(captured) if t is None]
                if missing:
                    raise ValueError(f"blocks never ran in the forward pass: {missing}")
                channels = {t.shape[-1] for t in captured}  # type: ignore[union-attr]
                if len(channels) != 1:
                    raise ValueError(f"block outputs must share one channel width, got {sorted(channels)}")
                if totals is None:
                    totals = torch.zeros(len(task_names), len(blocks), channels.pop(), dtype=torch.float64)
                for t_index, task in enumerate(task_names):
                    task_output = task_losses[task](outputs)
                    if not isinstance(task_output, torch.Tensor) or not task_output.requires_grad:
                        raise ValueError(f"task {task!r} output does not depend on the block outputs")
                    targets = [t for t in captured if t is not None]
                    grads = torch.autograd.grad(
                        task_output.sum(),
                        targets,
                        retain_graph=t_index + 1 < len(task_names),
                        allow_unused=True,
                    )
                    for b_index, grad in enumerate(grads):
                        if grad is not None:
                            squared = grad.detach().double().pow(2)
                            totals[t_index, b_index] += (
                                squared.reshape(-1, squared.shape[-1]).sum(dim=0).cpu()
                            )
                count += 1
    finally:
        for handle in handles:
            handle.remove()
        for p, requires_grad in frozen:
            p.requires_grad_(requires_grad)
    if totals is None or count == 0:
        raise ValueError("samples is empty: need at least one calibration sample")
    return FisherStats(
        raw=(totals / count).float(),
        task_names=task_names,
        block_names=[name for name, _ in blocks],
        num_samples=count,
        metadata=dict(metadata or {}),
    )


def plot_fisher_heatmap(stats: FisherStats, path: str) -> None:
    """PNG: mean per-task-normalised Fisher per block x task (log10), beside the combined [L, C] weights."""

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    block_task = stats.per_task_normalised().mean(dim=2).T  # [L, T]
    combined = stats.combined_weights()
    tiny = 1e-12
    height = max(3.0, 0.2 * len(stats.block_names) + 1.5)
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, height), gridspec_kw={"width_ratios": [1, 3]})
    image = left.imshow(torch.log10(block_task + tiny).numpy(), aspect="auto", cmap="viridis")
    left.set_xticks(range(len(stats.task_names)), stats.task_names, rotation=45, ha="right")
    step = max(1, math.ceil(len(stats.block_names) / 24))
    ticks = list(range(0, len(stats.block_names), step))
    left.set_yticks(ticks, [stats.block_names[i] for i in ticks], fontsize=7)
    left.set_title("log10 mean Fisher / task mean")
    fig.colorbar(image, ax=left)
    image = right.imshow(torch.log10(combined).numpy(), aspect="auto", cmap="magma")
    right.set_xlabel("output channel")
    right.set_yticks(ticks, [stats.block_names[i] for i in ticks], fontsize=7)
    right.set_title("log10 combined FGQ weight (block mean 1, floor 0.01)")
    fig.colorbar(image, ax=right)
    fig.tight_layout()
    try:
        with atomic_output_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, format="png", dpi=110)
    finally:
        plt.close(fig)
