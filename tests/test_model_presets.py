"""Preset structure against the official checkpoint manifest, without allocating weights."""

from __future__ import annotations

import re

import pytest
from click.testing import CliRunner

from vggt_et.cli import main
from vggt_et.model.loading import expected_shapes


def test_vggt1b_matches_manifest_tensor_by_tensor(manifest: dict) -> None:
    ours = expected_shapes("vggt-1b", track_head=True)  # built on the meta device
    official = {name: tuple(shape) for name, shape in manifest["tensors"].items()}
    assert sorted(set(official) - set(ours)) == []
    assert sorted(set(ours) - set(official)) == []
    wrong = {k: (ours[k], official[k]) for k in official if ours[k] != official[k]}
    assert wrong == {}
    assert len(ours) == 1797


def test_info_reports_official_parameter_count(manifest: dict) -> None:
    result = CliRunner().invoke(main, ["info", "--preset", "vggt-1b", "--json"])
    assert result.exit_code == 0, result.output
    import json

    report = json.loads(result.output)
    assert report["total_params"] == manifest["total_params"] == 1_256_537_516
    assert report["parts"]["track_head"] == 65_941_396
    assert report["parts"]["aggregator.patch_embed"] == 304_372_736


def _pattern(name: str) -> str:
    return re.sub(r"\.\d+\.", ".N.", name)


@pytest.mark.parametrize("preset", ["tiny", "small"])
def test_small_presets_share_the_module_tree(preset: str) -> None:
    """Same tensor names up to block indices: a small preset exercises every code path of vggt-1b."""
    big = {_pattern(k) for k in expected_shapes("vggt-1b", track_head=True)}
    small = {_pattern(k) for k in expected_shapes(preset, track_head=True)}
    assert small == big


def test_track_head_is_optional() -> None:
    with_track = expected_shapes("tiny", track_head=True)
    without = expected_shapes("tiny", track_head=False)
    assert set(with_track) - set(without) == {k for k in with_track if k.startswith("track_head.")}


def test_unknown_preset_is_a_one_line_error() -> None:
    result = CliRunner().invoke(main, ["info", "--preset", "vggt-2b"])
    assert result.exit_code == 2
    assert "unknown preset 'vggt-2b'" in result.output
