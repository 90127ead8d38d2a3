"""Smoke runs of the command line: help for every verb, world generation, errors without tracebacks."""

import subprocess
import sys
from pathlib import Path

import pytest

from must.cli import VERBS as VERB_MODULES
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


def test_parser_builds_from_verb_modules_with_the_same_three_names() -> None:
    build_parser()
    assert set(VERBS) <= set(VERB_MODULES)
    for module in VERB_MODULES.values():
        assert isinstance(module.SUMMARY, str) and module.SUMMARY
        assert callable(module.add_arguments) and callable(module.run)


def test_parser_builds_beside_a_directory_named_like_a_preset(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "tiny").mkdir()  # --config help reads the shipped presets, not ./tiny
    monkeypatch.chdir(tmp_path)
    build_parser()


@pytest.mark.parametrize(("name", "readable"), [("teach", None), ("label", "demo, paper, study, tiny"),
                                                ("train", "paper, tiny")])
def test_config_help_says_which_presets_a_verb_reads(name: str, readable: str | None,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main([name, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "read whole only by `must demo`" in text
    assert (f"section of: {readable}" if readable else "this verb can read") in text


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The world's transfer domain (every task labeled), 4 images per split, as ``must transfer``
    reads it from ``--world``."""
    from must.world import generate

    root = tmp_path_factory.mktemp("cli_world")
    for seed, split in enumerate(("train", "val", "test")):
        generate("transfer", root / split, count=4, size=32, seed=seed, progress=False)
    return root


def unknown_option_runs(world: Path, out: Path) -> dict[str, list[str]]:
    """Every verb that builds tasks, each given the misspelled option ``dropuot``."""
    data = f"world:{world / 'train'}"
    return {
        "teach": ["teach", "--task", "detection", "--data", data, "--out", str(out),
                  "task_options.dropuot=0.3"],
        "train": ["train", "--data", data, "--out", str(out), "tasks.detection.num_classes=3",
                  "tasks.detection.dropuot=0.3"],
        "transfer": ["transfer", "--init", "none", "--out", str(out), "--world", str(world),
                     "--tasks", "detection", "tasks.detection.task_options.dropuot=0.3"],
        "pretrain": ["pretrain", "--method", "rotation", "--data", data, "--out", str(out),
                     "task_options.rotation.dropuot=0.3"],
    }


@pytest.mark.parametrize(("verb", "valid"), [("teach", "representation_size"), ("train", "representation_size"),
                                             ("transfer", "representation_size"), ("pretrain", "view_size")])
def test_unknown_task_option_names_it_and_the_valid_ones(
        verb: str, valid: str, world: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(unknown_option_runs(world, tmp_path / "out")[verb]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"must {verb}: error: task "), error
    assert "has no option 'dropuot'; valid options: " in error and valid in error, error
    assert not list((tmp_path / "out").rglob("checkpoint.pt"))


def test_a_user_error_is_one_line_and_a_bug_a_traceback(monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    from must.config import ConfigError
    from must.errors import MustError
    from must.world import cli as world_cli

    def refuse(args: object) -> int:
        raise ConfigError("world.size: must be at least 16")

    def bug(args: object) -> int:
        raise KeyError("a lookup that should not fail")

    monkeypatch.setattr(world_cli, "run", refuse)
    assert main(["world", "objects", "--out", "x"]) == 2
    assert capsys.readouterr().err == "must world: error: world.size: must be at least 16\n"
    monkeypatch.setattr(world_cli, "run", bug)
    with pytest.raises(KeyError, match="should not fail"):
        main(["world", "objects", "--out", "x"])
    from must.data.readers import DataError
    from must.label import ShardError, TeacherError
    from must.models import CheckpointError
    assert all(issubclass(error, MustError) for error in (ConfigError, DataError, TeacherError,
                                                          CheckpointError, ShardError))

