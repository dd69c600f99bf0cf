"""`vggt-et compile`: the command line's flags into CompileOptions, the pipeline, a summary of the report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from vggt_et.options import CompileOptions, QuantSettings, W4FisherFlags
from vggt_et.utils.errors import UserError


def default_report_path(output: str) -> str:
    """OUTPUT with .json, refused when that is the program itself (`-o m.json`)."""
    report = str(Path(output).with_suffix(".json"))
    if Path(report) == Path(output):
        raise UserError(
            f"-o {output}: the report would replace the program (its default path is OUTPUT with "
            ".json); name the program .pte or pass --report"
        )
    return report


def options_from_flags(kw: dict[str, Any]) -> CompileOptions:
    """Click's keyword arguments → CompileOptions (typed settings per scheme; sizes parsed)."""
    from vggt_et.utils.sizes import parse_budget

    kw = dict(kw)
    quantization = QuantSettings(
        w4_group_size=kw.pop("w4_group_size"),
        keep_float=tuple(kw.pop("keep_float")) or None,
        int8_activations=kw.pop("int8_activations"),
    )
    w4_fisher = W4FisherFlags(
        fisher=kw.pop("fisher"),
        w4_budget=kw.pop("w4_budget"),
        rotation=not kw.pop("no_rotation"),
        mixed_precision=not kw.pop("no_mixed_precision"),
        fisher_clip=not kw.pop("no_fisher_clip"),
    )
    try:
        kw["attention_budget"] = parse_budget(kw["attention_budget"])
    except ValueError as exc:
        raise UserError(f"--attention-budget: {exc}") from None
    report = kw.pop("report") or default_report_path(kw["output"])
    return CompileOptions(**kw, report=report, quantization=quantization, w4_fisher=w4_fisher)


def compile_command(**kw: Any) -> None:
    """Check every flag first (seconds), then compile; print the stage times and one paragraph on the program."""
    from vggt_et.pipeline.validation import validate

    options = options_from_flags(kw)
    checked = validate(options)

    from vggt_et.pipeline.compile import compile_model  # imports ExecuTorch: only once the flags are good
    from vggt_et.utils.tables import format_table

    report = compile_model(options, checked=checked)
    rows = [(stage, seconds) for stage, seconds in report["stage_seconds"].items()]
    rows.append(("total", report["total_seconds"]))
    click.echo(format_table(["stage", "seconds"], rows))
    fraction = report["delegated_fraction"]
    what = "program"
    if options.stop_before_lowering:
        what, delegation = "exported program (.pt2)", "not lowered"
    elif fraction is None:
        delegation = "TFLite flatbuffer (no ExecuTorch delegates)"
    else:
        delegation = (
            f"delegated {100 * fraction:.1f}% of compute ops in {report['delegate_segments']} segment(s)"
        )
    click.echo(
        f"wrote {what} {report['pte_path']} ({report['pte_bytes'] / 2**20:.1f} MiB), report {options.report}\n"
        f"{delegation}; peak RSS {report['peak_rss_bytes'] / 2**30:.2f} GiB "
        f"({report['peak_rss_over_weights']:.2f}x the weights)"
    )
