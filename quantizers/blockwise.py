"""Per-block W4 of any model's transformer blocks: capture block inputs, plan, clip, measure, block by block.

Model-agnostic (the blocks are module paths in forward order); `vggt_et.fgq` applies it to VGGT's
aggregator. Errors are block-output MSE against the float block on the same inputs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from .clipping import (
    BlockCall,
    apply_fisher_clipping,
    block_linears,
    block_output_error,
    block_outputs,
    run_to_blocks,
    swapped_weights,
)
from .w4_transforms import fake_quantize_weight, weight_storage_bytes

logger = logging.getLogger(__name__)


class AllBlockInputs(Mapping[str, Sequence[BlockCall]]):
    """Every block's inputs from one forward per sample (stopped at the last block), kept together.

    Why: planning reads every block twice from the unchanged model, and a forward per block and sample
    costs about one aggregator pass per block (hours for a 1B-parameter model on two cores). One capture holds
    2*depth block inputs per sample (VGGT-1B: about 0.5 GiB per 2-frame 518x518 sample). Use only
    while the model does not change; clipping, which edits blocks as it goes, uses
    :func:`in_forward_order`.
    """

    def __init__(self, model: nn.Module, paths: Sequence[str], samples: Sequence[tuple]) -> None:
        self.model, self.paths, self.samples = model, list(paths), list(samples)
        self._all: dict[str, list[BlockCall]] | None = None

    def __getitem__(self, path: str) -> list[BlockCall]:
        if path not in self.paths:
            raise KeyError(path)
        if self._all is None:
            self._all = {p: [] for p in self.paths}
            blocks = [self.model.get_submodule(p) for p in self.paths]
            run_to_blocks(
                self.model,
                blocks,
                self.samples,
                lambda i, call: self._all[self.paths[i]].append(call),
                stop_at_last=True,
            )
        return self._all[path]

    def __contains__(self, path: object) -> bool:
        return path in self.paths

    def __iter__(self) -> Iterator[str]:
        return iter(self.paths)

    def __len__(self) -> int:
        return len(self.paths)


def _batched(samples: Sequence[tuple]) -> tuple:
    """The samples as one batch along dim 0 (their batch dim): one forward carries them all."""
    return tuple(torch.cat(parts, dim=0) for parts in zip(*samples, strict=True))


def in_forward_order(
    model: nn.Module, paths: Sequence[str], samples: Sequence[tuple], visit: Callable[[int, BlockCall], None]
) -> None:
    """``visit(index, call)`` on each block's input (all samples batched) as one forward reaches it; the
    forward then goes on through the block as ``visit`` left it.

    Why: clipping edits each block and the next block must see what the edited one produces. Capturing
    each block's inputs anew costs a forward up to that block per block (quadratic in depth: about an
    hour of a VGGT-1B compile on two cores); here the one forward carries the edited outputs on."""
    blocks = [model.get_submodule(p) for p in paths]
    run_to_blocks(model, blocks, [_batched(samples)], visit, stop_at_last=True)


def _fake_quantized(linears: dict[str, nn.Linear], plan: dict[str, int], group_size: int) -> dict:
    return {
        linear: fake_quantize_weight(linear.weight, plan[name], group_size if plan[name] == 4 else None)
        for name, linear in linears.items()
    }


def _quantize_block(
    model: nn.Module,
    path: str,
    calls: Sequence[BlockCall],
    weights: torch.Tensor,
    plan: dict[str, int],
    *,
    clipping: bool,
    group_size: int,
) -> dict[str, Any]:
    """One block: error of the plan with plain rounding, then (optionally) clip its 4-bit linears in place
    and measure again."""
    block = model.get_submodule(path)
    references = block_outputs(block, calls)
    linears = block_linears(block, path)
    with swapped_weights(_fake_quantized(linears, plan, group_size)):
        rtn = block_output_error(block, calls, references, weights)
    entry: dict[str, Any] = {
        "bits": {name[len(path) + 1 :]: plan[name] for name in linears},
        "rtn_weighted": rtn[0],
        "rtn_unweighted": rtn[1],
        "clipped": False,
    }
    four_bit = [name for name in linears if plan[name] == 4]
    final = rtn
    if clipping and four_bit:
        report = apply_fisher_clipping(
            model,
            [path],
            {path: calls},
            weights[None],
            linears={path: four_bit},
            bits=4,
            group_size=group_size,
        )
        entry["clipped"] = report.blocks[path].kept
        if entry["clipped"]:
            with swapped_weights(_fake_quantized(linears, plan, group_size)):
                final = block_output_error(block, calls, references, weights)
    entry["final_weighted"], entry["final_unweighted"] = final
    return entry


def quantize_blocks(
    model: nn.Module,
    blocks: list[tuple[str, str]],
    samples: list[tuple],
    channel_weights: torch.Tensor,
    plan: dict[str, int],
    *,
    clipping: bool,
    group_size: int,
) -> dict[str, dict[str, Any]]:
    """Per block, in order: error of the plan with plain rounding, then (optionally) clip its 4-bit linears
    and measure again. Errors are block-output MSE against the float block on the same inputs, Fisher-
    weighted and unweighted; each block sees the inputs the already-clipped blocks before it produce."""
    results: dict[str, dict[str, Any]] = {}

    def visit(index: int, calls: Sequence[BlockCall]) -> None:
        label, path = blocks[index]
        entry = _quantize_block(
            model, path, calls, channel_weights[index], plan, clipping=clipping, group_size=group_size
        )
        results[label] = entry
        logger.info(
            "block %s: weighted error %.3e -> %.3e", label, entry["rtn_weighted"], entry["final_weighted"]
        )

    paths = [path for _, path in blocks]
    if clipping:  # blocks change as we go: one batched forward carries each clipped block's output on
        in_forward_order(model, paths, samples, lambda index, call: visit(index, [call]))
    else:  # nothing changes: one capture serves every block
        inputs = AllBlockInputs(model, paths, samples)
        for index, path in enumerate(paths):
            visit(index, inputs[path])
    return results


def plan_weight_bytes(model: nn.Module, plan: dict[str, int], group_size: int) -> dict[str, int]:
    modules = dict(model.named_modules())
    planned = all_w4 = fp32 = 0
    for name, bits in plan.items():
        out_f, in_f = modules[name].weight.shape
        planned += weight_storage_bytes(out_f, in_f, bits, group_size if bits == 4 else None, 4)
        all_w4 += weight_storage_bytes(out_f, in_f, 4, group_size, 4)
        fp32 += out_f * in_f * 4
    return {"planned": planned, "all_w4": all_w4, "fp32": fp32}
