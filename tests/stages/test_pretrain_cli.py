"""``must pretrain`` on the command line: its help, a tiny ``multi`` run through ``must.cli.main``
with ``key.sub=value`` overrides (Doersch & Zisserman sec. 3-4: joint schedule, lasso), presets,
and clean errors for bad input."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import pytest

from must import config as config_lib
from must.cli import main
from must.stages.pretrain import RECORD_NAME, load_lasso_matrix
from must.stages.pretrain import build_config
from must.world import generate

TINY_OVERRIDES = ["image_size=32", "model.backbone=resnet18", "model.width=0.125", "model.fpn_channels=16",
                  "train.steps=2", "train.batch_size=4", "train.progress=false", "train.device=cpu",
                  "data.limit=8"]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pretrain_cli_world")
    generate("pool", root, count=8, size=32, seed=1, progress=False)
    return root


def test_help_names_methods_and_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["pretrain", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for word in ("--method", "--data", "--out", "--config", "simclr", "relative_position", "multi",
                 "schedule=alternate|joint", "lasso", "harmonize", "must transfer --init"):
        assert word in text, word


def test_multi_run_with_overrides(world: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "multi"
    code = main(["pretrain", "--method", "multi", "--data", f"world:{world}", "--out", str(out),
                 *TINY_OVERRIDES, "tasks=[rotation,exemplar]", "schedule=joint", "lasso=0.5",
                 "task_options.rotation.view_size=32"])
    assert code == 0
    printed = capsys.readouterr().out
    assert f"pretrain 'multi' -> {out / 'checkpoint.pt'} (2 steps)" in printed and "loss/rotation=" in printed
    saved = config_lib.read_yaml(out / "config.yaml")
    assert saved["tasks"] == ["rotation", "exemplar"] and saved["schedule"] == "joint"
    assert saved["lasso"] == 0.5 and saved["model"]["width"] == 0.125
    assert saved["data"] == {**saved["data"], "format": "world", "root": str(world), "limit": 8}
    record = json.loads((out / RECORD_NAME).read_text())
    assert record["task_options"] == {"rotation": {"view_size": 32}} and record["steps"] == 2
    assert all(math.isfinite(value) for value in record["losses"].values())
    lasso = load_lasso_matrix(out / "checkpoint.pt")
    assert lasso is not None and lasso["tasks"] == ["rotation", "exemplar"]
    # the same command again resumes from the finished checkpoint: nothing is trained
    before = (out / "metrics.jsonl").read_text()
    assert main(["pretrain", "--method", "multi", "--data", f"world:{world}", "--out", str(out),
                 *TINY_OVERRIDES, "tasks=[rotation,exemplar]", "schedule=joint", "lasso=0.5",
                 "task_options.rotation.view_size=32"]) == 0
    assert (out / "metrics.jsonl").read_text() == before


def test_preset_section_then_method_then_overrides(tmp_path: Path) -> None:
    preset = tmp_path / "preset.yaml"
    preset.write_text("pretrain:\n  method: rotation\n  image_size: 48\n  train: {steps: 7, lr: 0.2}\n")
    args = argparse.Namespace(config=str(preset), method="simclr", data="folder:/images",
                              overrides=["train.steps=9"])
    config = build_config(args)
    assert config.method == "simclr" and config.image_size == 48  # --method wins over the preset
    assert (config.train.steps, config.train.lr) == (9, 0.2)
    assert config.data is not None and (config.data.format, config.data.root) == ("folder", "/images")


@pytest.mark.parametrize("arguments,message", [
    (["--data", "no-colon"], "not of the form FORMAT:ROOT"),
    (["no_such_key=1"], "no_such_key"),
    (["schedule=sometimes"], "schedule: 'sometimes' is not valid"),
    (["--data", "folder:{missing}"], "directory not found"),
    ([], "no images given"),
])
def test_bad_input_is_a_clean_error(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                    arguments: list[str], message: str) -> None:
    arguments = [argument.format(missing=tmp_path / "missing") for argument in arguments]
    assert main(["pretrain", "--method", "rotation", "--out", str(tmp_path / "out"), *arguments]) == 2
    error = capsys.readouterr().err
    assert error.startswith("must pretrain: error:") and message in error, error
    assert not (tmp_path / "out").exists()


def test_unknown_method_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["pretrain", "--method", "bogus", "--out", "x"])
    assert exit_info.value.code == 2 and "invalid choice: 'bogus'" in capsys.readouterr().err
