"""The ``must label`` verb's arguments: teachers, data, overrides, errors."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from must.config import ConfigError
from must.label import PseudoLabels
from must.label.cli import add_arguments, build_config, run


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


def test_label_verb_runs_and_applies_overrides(world: Path, teachers: dict[str, Path], tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    args = _parse("--teacher", str(teachers["depth"]), "--teacher", f"segmentation={teachers['segmentation']}",
                  "--data", f"folder:{world / 'images'}", "--out", str(out),
                  "workers=0", "images_per_shard=25", "thresholds.segmentation=0.7", "data.limit=30")
    config = build_config(args)
    assert config.teachers[1].startswith("segmentation=") and config.thresholds == {"segmentation": 0.7}
    assert run(args) == 0
    assert "pseudo labels in" in capsys.readouterr().out
    labels = PseudoLabels(out)
    assert len(labels) == 30 and [s.samples for s in labels.manifest.shards] == [25, 5]
    assert labels.manifest.teacher_for("segmentation").threshold == 0.7
    assert (out / "config.yaml").is_file()


def test_argument_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="FORMAT:ROOT"):
        build_config(_parse("--teacher", "t", "--data", "nocolon", "--out", str(tmp_path)))
    with pytest.raises(ConfigError, match="no teacher"):
        build_config(_parse("--data", "folder:/x", "--out", str(tmp_path)))
    with pytest.raises(ConfigError, match="unknown config key 'bogus'"):
        build_config(_parse("--teacher", "t", "--data", "folder:/x", "--out", str(tmp_path), "bogus=1"))
