"""One attention layer three ways, side by side: whole bmm/softmax (today), bounded blocks, and ExecuTorch's
flash-attention CPU kernel (`torch.ops.llama.custom_sdpa`, outside the XNNPACK delegate).

    python benchmarks/attention_forms.py                       # 8 heads x 4096 tokens x 64, budget 16MiB
    python benchmarks/attention_forms.py --tokens 2748 --heads 16 --budget 64MiB

Each form is exported, run through the XNNPACK pass list, lowered and run by ExecuTorch's Python runtime on
the same inputs (the runtime's threads; the C++ runner does not link the custom-ops kernel library). Prints
the median latency, the largest attention intermediate in the graph, delegate segments and the error
against eager PyTorch.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from _common import machine, time_interleaved
from vggt_et.utils.tables import format_table


class Whole(nn.Module):
    def forward(self, q, k, v):
        return F.scaled_dot_product_attention(q, k, v)


class Flash(nn.Module):
    """custom_sdpa takes [B, S, H, D] (sequence on dim 1); start_pos 0 with q_len = kv_len: non-causal."""

    def forward(self, q, k, v):
        q, k, v = (x.transpose(1, 2) for x in (q, k, v))
        return torch.ops.llama.custom_sdpa(q, k, v, 0, None, 0.0, False, None).transpose(1, 2)


def build(model: nn.Module, args: tuple, budget: int | None, path: Path) -> dict:
    from executorch.exir import EdgeCompileConfig, to_edge_transform_and_lower

    import vggt_et.passes as P
    from vggt_et.passes.partitioning import lean_xnnpack_partitioner

    ep = torch.export.export(model, args, strict=False)
    ep, _ = P.apply_with_report(
        ep, "xnnpack", configured={"bound_attention": lambda e: P.bound_attention(e, budget)}
    )
    largest = max((b for _, b in P.attention_intermediates(ep)), default=0)
    edge = to_edge_transform_and_lower(
        ep,
        partitioner=[lean_xnnpack_partitioner()],
        compile_config=EdgeCompileConfig(_check_ir_validity=False),
    )
    segments = P.coverage(edge.exported_program())["delegate_segments"]
    path.write_bytes(edge.to_executorch().buffer)
    return {"largest_mib": largest / 2**20, "segments": segments}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--budget", default="16MiB")
    parser.add_argument("--iters", type=int, default=5)
    args = parser.parse_args()
    from executorch.extension.llm.custom_ops import custom_ops  # noqa: F401 - registers llama::custom_sdpa

    import vggt_et.passes as P
    from vggt_et.runtime.program import PteProgram

    g = torch.Generator().manual_seed(0)
    qkv = tuple(torch.randn(1, args.heads, args.tokens, args.head_dim, generator=g) for _ in range(3))
    want = F.scaled_dot_product_attention(*qkv)
    forms = [
        ("whole (today)", Whole(), None),
        (f"bounded {args.budget}", Whole(), P.parse_budget(args.budget)),
        ("custom_sdpa", Flash(), None),
    ]
    print(f"# attention [1, {args.heads}, {args.tokens}, {args.head_dim}] fp32; {machine()}")
    arrays = [x.numpy() for x in qkv]
    programs, rows = {}, {}
    with tempfile.TemporaryDirectory() as temp:
        for i, (name, model, budget) in enumerate(forms):
            path = Path(temp) / f"attention{i}.pte"
            info = build(model.eval(), qkv, budget, path)
            programs[name] = PteProgram(path)
            got = torch.from_numpy(programs[name].run(arrays)[0])
            info["rel_l2"] = float(torch.linalg.vector_norm(got - want) / torch.linalg.vector_norm(want))
            rows[name] = info
        # One call of each per round, so a slow spell of the shared machine falls on all forms.
        calls = {name: (lambda p=p: p.run(arrays)) for name, p in programs.items()}
        times = time_interleaved(calls, args.iters)
    table = [
        (name, times[name]["median"], info["largest_mib"], info["segments"], info["rel_l2"])
        for name, info in rows.items()
    ]
    headers = ["form", "median ms", "largest intermediate MiB", "segments", "rel L2 vs eager"]
    print(format_table(headers, table, [None, ".1f", ".1f", "d", ".1e"], markdown=True))


if __name__ == "__main__":
    main()
