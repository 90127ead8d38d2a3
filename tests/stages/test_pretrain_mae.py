"""``must pretrain --method mae`` (He et al. 2022) with a ViT-tiny trunk on a tiny image folder:
the run writes a checkpoint whose ViT trunk (``backbone.trunk.*``) initializes a downstream model
of the same backbone; a run stopped after 3 steps and resumed ends bit for bit as 5 steps
straight; a ResNet backbone ends in one line naming the option to set, before anything is
written; lasso / harmonize are refused."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from must.cli import main
from must.config import ConfigError
from must.data.readers import DatasetConfig
from must.models import ModelConfig, build_model
from must.models.weights import CheckpointError
from must.stages import pretrain as pretrain_stage
from must.stages.pretrain import RECORD_NAME, PretrainConfig, run_pretrain
from must.tasks import build_task
from must.train.config import TrainConfig
from must.world import generate

VIT = "timm:vit_tiny_patch16_224"
SIZE = 32  # 2 x 2 patches: 1 visible, 3 masked
TINY_RUN = ["image_size=32", f"model.backbone={VIT}", "model.fpn_channels=16", "task_options.mae.view_size=32",
            "task_options.mae.decoder_dim=32", "task_options.mae.decoder_heads=2", "train.batch_size=4",
            "train.progress=false", "train.device=cpu"]


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A plain folder of 8 unlabeled 32 px images."""
    root = tmp_path_factory.mktemp("pretrain_mae_world")
    generate("pool", root, count=8, size=SIZE, seed=0, progress=False)
    return root / "images"


@pytest.fixture(scope="module")
def mae_run(images: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """(output directory, printed summary) of a 3-step ``must pretrain --method mae``."""
    out = tmp_path_factory.mktemp("pretrain_mae") / "mae"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["pretrain", "--method", "mae", "--data", f"folder:{images}", "--out", str(out),
                     *TINY_RUN, "train.steps=3"]) == 0
    return out, printed.getvalue()


def test_cli_run_writes_a_checkpoint_whose_vit_initializes_a_transfer_model(mae_run: tuple[Path, str]) -> None:
    out, printed = mae_run
    assert f"pretrain 'mae' -> {out / 'checkpoint.pt'} (3 steps)" in printed
    record = json.loads((out / RECORD_NAME).read_text())
    assert record["method"] == "mae" and record["tasks"]["mae"]["mask_ratio"] == 0.75
    assert record["model"]["backbone"] == VIT and math.isfinite(record["losses"]["loss"])
    saved = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=True)["model"]
    assert not any(key.startswith("heads.mae.") and ".trunk." in key for key in saved)

    task = build_task("classification", num_classes=5)
    config = ModelConfig(backbone=VIT, fpn_channels=16, init=str(out / "checkpoint.pt"))
    loaded = build_model(config, {task.name: task}).state_dict()
    trunk = [key for key in saved if key.startswith("backbone.trunk.")]
    assert len(trunk) > 100 and all(torch.equal(loaded[key], saved[key]) for key in trunk)
    fresh = build_model(dataclasses.replace(config, init=None), {task.name: task}).state_dict()
    assert not torch.equal(fresh["backbone.trunk.blocks.0.attn.qkv.weight"],
                           saved["backbone.trunk.blocks.0.attn.qkv.weight"])  # pre-training moved it
    assert not any(key.startswith("heads.mae") for key in loaded)


def test_a_resnet_model_refuses_the_vit_checkpoint_naming_its_backbone(mae_run: tuple[Path, str]) -> None:
    """A transfer that forgets model.backbone: one line naming the file and the backbone to pass
    (from the run's pretrain.json), not a list of missing keys."""
    out, _ = mae_run
    task = build_task("classification", num_classes=5)
    config = ModelConfig(backbone="resnet18", width=0.125, fpn_channels=16, init=str(out / "checkpoint.pt"))
    with pytest.raises(CheckpointError) as error:
        build_model(config, {task.name: task})
    message = str(error.value)
    assert "\n" not in message and message.startswith(str(out / "checkpoint.pt"))
    assert message.endswith(f"this checkpoint was trained with backbone '{VIT}' ({out / RECORD_NAME}): "
                            f"pass model.backbone={VIT}")


class Interrupted(Exception):
    """Stands for a killed process: the run stops between two steps, its last checkpoint kept."""


def interrupt_after(batches: int, monkeypatch: pytest.MonkeyPatch) -> None:
    real = pretrain_stage.make_loader

    def stopping(*args: Any, **kwargs: Any) -> Iterator[Any]:
        for index, batch in enumerate(real(*args, **kwargs)):
            if index == batches:
                raise Interrupted
            yield batch
    monkeypatch.setattr(pretrain_stage, "make_loader", stopping)


def mae_config(images: Path, steps: int) -> PretrainConfig:
    train = TrainConfig(steps=steps, batch_size=4, lr=0.05, log_every=1, progress=False, device="cpu",
                        checkpoint_every=1)
    return PretrainConfig(method="mae", data=DatasetConfig(format="folder", root=str(images)),
                          task_options={"mae": {"view_size": SIZE, "decoder_dim": 32, "decoder_heads": 2}},
                          model=ModelConfig(backbone=VIT, fpn_channels=16), train=train, image_size=SIZE)


def test_resumed_run_equals_the_straight_run(images: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The masks come from the global generator, which the checkpoint restores."""
    straight = run_pretrain(mae_config(images, 5), tmp_path / "straight")
    with monkeypatch.context() as patch:
        interrupt_after(3, patch)
        with pytest.raises(Interrupted):
            run_pretrain(mae_config(images, 5), tmp_path / "resumed")
    resumed = run_pretrain(mae_config(images, 5), tmp_path / "resumed")
    assert straight.step == resumed.step == 5 and resumed.resumed_from == 3
    first, second = (torch.load(tmp_path / name / "checkpoint.pt", weights_only=True)["model"]
                     for name in ("straight", "resumed"))
    assert set(first) == set(second)
    different = [key for key in first if not torch.equal(first[key], second[key])]
    assert not different, different[:5]
    losses = [json.loads(line)["loss"] for line in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()
              if '"loss"' in line]
    assert len(losses) == 5 and len(set(losses)) > 1


def test_a_resnet_backbone_ends_in_one_line_before_anything_is_written(
        images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert main(["pretrain", "--method", "mae", "--data", f"folder:{images}", "--out", str(out),
                 "model.backbone=resnet18", "model.width=0.125", "train.steps=1", "train.progress=false"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith("must pretrain: error: "), error
    assert f"set model.backbone={VIT}" in error and "'resnet18'" in error
    assert not out.exists()


def test_lasso_and_harmonize_are_refused() -> None:
    for changes in ({"lasso": 0.01}, {"harmonize": True}):
        with pytest.raises(ConfigError, match="mae runs the ViT trunk itself"):
            PretrainConfig(method="mae", **changes)
