"""``must report RUN_DIR``: arguments, a run, and refused arguments."""

import argparse
from typing import Any
from pathlib import Path

import pytest

from must.config import ConfigError
from must.report.cli import add_arguments, parse_sources, run


def parse(arguments: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="must report")
    add_arguments(parser)
    return parser.parse_args(arguments)


def test_run_writes_the_report(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    images = run_dir / "data" / "pool" / "train"
    args = parse([str(run_dir), "--out", str(tmp_path / "out"), "--images", f"mine={images}",
                  "--figure-images", "1", "--panel", "40"])
    assert run(args) == 0
    assert "index.html" in capsys.readouterr().out
    for name in ("index.html", "report.md", "results.json", "figure4.png"):
        assert (tmp_path / "out" / name).exists(), name


def test_bad_arguments() -> None:
    assert parse_sources([]) is None
    assert parse_sources(["a=x", "b=y/z"]) == {"a": Path("x"), "b": Path("y/z")}
    with pytest.raises(ConfigError, match="NAME=DIR"):
        parse_sources(["just-a-folder"])
    with pytest.raises(ConfigError, match="--figure-images"):
        run(parse(["somewhere", "--figure-images", "0"]))


def test_a_student_trained_without_val_is_named_as_such(tmp_path: Path, files: Any,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    # student.json exists (must train finished) but holds no metrics: no --val was given
    files.write_json(tmp_path / "student" / "student.json",
                     {"tasks": {"classification": {"num_classes": 3}}, "image_size": 32, "metrics": {}})
    assert run(parse([str(tmp_path), "--figure-images", "1", "--panel", "40"])) == 0
    out = capsys.readouterr().out
    assert "student/student.json exists but holds no validation metrics" in out
    assert "without --val" in out
    assert "(student/student.json or student/metrics.jsonl)" not in out
