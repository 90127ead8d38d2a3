"""Smoke runs of the command line: help for every verb, world generation, errors without tracebacks."""

import subprocess
import sys
from pathlib import Path

import pytest

from must.cli import build_parser, main

VERBS = ["world", "teach", "label", "train", "transfer", "report", "demo"]


def test_help_lists_every_verb(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for name in VERBS:
        assert name in text


@pytest.mark.parametrize("name", VERBS)
def test_each_verb_has_help(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([name, "--help"])
    assert exit_info.value.code == 0
    assert "usage: must " + name in capsys.readouterr().out


def test_world_writes_a_dataset(tmp_path: Path) -> None:
    assert main(["world", "objects", "--out", str(tmp_path / "objects"), "--count", "6", "--size", "32"]) == 0
    assert (tmp_path / "objects" / "world.json").exists()
    assert len(list((tmp_path / "objects" / "images").rglob("*.png"))) == 6


def test_unknown_domain_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["world", "mars", "--out", "x"])
    assert "invalid choice" in capsys.readouterr().err


def test_bad_override_is_a_clean_error(tmp_path: Path) -> None:
    run = subprocess.run([sys.executable, "-m", "must.cli", "demo", "--out", str(tmp_path), "world.sizee=3"],
                         capture_output=True, text=True)
    assert run.returncode == 2
    assert "world.sizee" in run.stderr and "Traceback" not in run.stderr


def test_parser_builds() -> None:
    parser, runners = build_parser()
    assert set(VERBS) <= set(runners)
