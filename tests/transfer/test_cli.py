"""``must transfer``'s arguments: default suite -> preset -> overrides -> ``--tasks``; bad task
names are clean errors; and one tiny end-to-end run through ``run``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from must.config import ConfigError
from must.transfer import cli


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="must transfer")
    cli.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_suite_preset_overrides_and_task_subset(tmp_path: Path) -> None:
    preset = tmp_path / "preset.yaml"
    preset.write_text("transfer:\n  workers: 2\n  tasks:\n    depth:\n      steps: [50, 100]\n")
    args = parse("--init", "none", "--out", str(tmp_path), "--tasks", "depth,normals", "--config",
                 str(preset), "tasks.depth.lrs=[0.01,0.1]", "model.width=0.5")
    config = cli.build_config(args)
    assert config.init is None and config.init_name == "scratch" and config.mode == "finetune"
    assert list(config.tasks) == ["depth", "normals"] and config.workers == 2
    assert config.tasks["depth"].steps == (50, 100) and config.tasks["depth"].lrs == (0.01, 0.1)
    assert config.tasks["depth"].train.root == str(tmp_path / "data" / "transfer" / "train")
    assert config.model.width == 0.5


def test_row_name_defaults_to_the_checkpoint_folder(tmp_path: Path) -> None:
    args = parse("--init", str(tmp_path / "student" / "checkpoint.pt"), "--out", str(tmp_path),
                 "--mode", "linear")
    config = cli.build_config(args)
    assert config.init_name == "student" and config.mode == "linear"
    assert cli.build_config(parse("--init", "x.pt", "--name", "must", "--out", "o")).init_name == "must"


def test_unknown_task_or_key_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown task"):
        cli.build_config(parse("--init", "none", "--out", str(tmp_path), "--tasks", "depht"))
    with pytest.raises(ConfigError, match="stepz"):
        cli.build_config(parse("--init", "none", "--out", str(tmp_path), "tasks.depth.stepz=[1]"))


def test_tiny_run_prints_and_writes_best(tmp_path: Path, world_root: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    args = parse("--init", "none", "--out", str(tmp_path), "--world", str(world_root), "--tasks", "depth",
                 "model.width=0.125", "model.fpn_channels=16", "progress=false", "tasks.depth.steps=[3]",
                 "tasks.depth.image_size=32", "tasks.depth.batch_size=4")
    assert cli.run(args) == 0
    best = json.loads((tmp_path / "transfer" / "scratch" / "depth" / "best.json").read_text())
    assert best["steps"] == 3 and f"delta1 = {best['value']:.4f}" in capsys.readouterr().out


def test_steps_and_lrs_set_every_chosen_tasks_grid(tmp_path: Path) -> None:
    config = cli.build_config(parse("--init", "none", "--out", str(tmp_path), "--tasks", "depth,segmentation",
                                    "--steps", "20", "--lrs", "0.05,0.1"))
    assert {name: (task.steps, task.lrs) for name, task in config.tasks.items()} == {
        "depth": ((20,), (0.05, 0.1)), "segmentation": ((20,), (0.05, 0.1))}
    default = cli.build_config(parse("--init", "none", "--out", str(tmp_path), "--steps", "30,60"))
    assert all(task.steps == (30, 60) for task in default.tasks.values()) and len(default.tasks) == 5
    assert default.tasks["classification"].lrs == (0.1,)  # --lrs not given: each task keeps its own
    for bad in (["--steps", "0"], ["--steps", "twenty"], ["--lrs", ""]):
        with pytest.raises(ConfigError, match=bad[0]):
            cli.build_config(parse("--init", "none", "--out", str(tmp_path), *bad))


def test_help_says_how_long_the_default_suite_takes(capsys: pytest.CaptureFixture[str]) -> None:
    from must.cli import main

    with pytest.raises(SystemExit):
        main(["transfer", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "about 1 minute per --init on 2 idle CPU cores" in out and "--steps N[,N...]" in out


def test_steps_shortens_a_real_run(tmp_path: Path, world_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = parse("--init", "none", "--out", str(tmp_path), "--world", str(world_root), "--tasks", "depth",
                 "--steps", "2", "model.width=0.125", "model.fpn_channels=16", "progress=false",
                 "tasks.depth.image_size=32", "tasks.depth.batch_size=4")
    assert cli.run(args) == 0
    assert "2 steps)" in capsys.readouterr().out
    best = json.loads((tmp_path / "transfer" / "scratch" / "depth" / "best.json").read_text())
    assert best["steps"] == 2


def test_command_line_init_name_and_mode_win_over_a_preset(tmp_path: Path) -> None:
    # A finished run's config_finetune.yaml names its own init: reusing it for another checkpoint
    # must train that checkpoint under the new name, not skip to the preset's finished cells.
    preset = tmp_path / "config_finetune.yaml"
    preset.write_text("init: runs/demo/student/checkpoint.pt\ninit_name: must\nmode: linear\n")
    config = cli.build_config(parse("--init", "other/checkpoint.pt", "--name", "variant",
                                    "--out", str(tmp_path), "--config", str(preset)))
    assert (config.init, config.init_name, config.mode) == ("other/checkpoint.pt", "variant", "linear")
    unnamed = cli.build_config(parse("--init", "none", "--out", str(tmp_path), "--config", str(preset),
                                     "--mode", "finetune"))
    assert (unnamed.init, unnamed.init_name, unnamed.mode) == (None, "scratch", "finetune")
