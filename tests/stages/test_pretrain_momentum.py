"""``must pretrain`` with the momentum methods (BYOL, MoCo v2 / v3, DINO) and the other two-view
methods: the engine moves the momentum target after every optimizer step, the target, MoCo's queue
and DINO's centre are in the checkpoint, and a run stopped after 3 steps and resumed to 5 ends with
the same state, bit for bit, as 5 steps straight; every method's loss changes over a few steps;
``--help`` lists every method; lasso / harmonize are refused with a momentum method."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from collections.abc import Iterator
from typing import Any

import pytest
import torch

from must.cli import main
from must.config import ConfigError
from must.stages import pretrain as pretrain_stage
from must.data.readers import DatasetConfig
from must.models import ModelConfig
from must.stages.pretrain import (METHOD_SUMMARIES, METHODS, PretrainConfig, build_pretext_tasks,
                                  build_pretrain_model, run_pretrain)
from must.train import checkpoint as checkpoints
from must.train.config import TrainConfig
from must.world import generate

TINY = ModelConfig(backbone="resnet18", width=0.125, fpn_channels=16)
SIZE = 32
SMALL_VIEWS: dict[str, dict[str, Any]] = {
    "byol": {"view_size": 32, "projection_dim": 16, "hidden_dim": 32},
    "mocov2": {"view_size": 32, "projection_dim": 16, "hidden_dim": 32, "queue_size": 16, "momentum": 0.9},
    "mocov3": {"view_size": 32, "projection_dim": 16, "hidden_dim": 32},
    "dino": {"view_size": 32, "local_size": 16, "local_crops": 2, "output_dim": 32, "hidden_dim": 32,
             "bottleneck_dim": 8},
    "barlow_twins": {"view_size": 32, "projection_dim": 16, "hidden_dim": 32},
    "vicreg": {"view_size": 32, "projection_dim": 16, "hidden_dim": 32},
    "simsiam": {"view_size": 32, "projection_dim": 16, "hidden_dim": 32, "prediction_hidden_dim": 8},
}
MOMENTUM = ("byol", "mocov2", "mocov3", "dino")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pretrain_momentum_world")
    generate("pool", root, count=8, size=SIZE, seed=0, progress=False)
    return root


def config(world: Path, method: str, steps: int) -> PretrainConfig:
    train = TrainConfig(steps=steps, batch_size=4, lr=0.05, log_every=1, progress=False, device="cpu",
                        checkpoint_every=1)
    return PretrainConfig(method=method, data=DatasetConfig(format="world", root=str(world)),  # type: ignore[arg-type]
                          task_options={method: SMALL_VIEWS[method]}, model=TINY, train=train, image_size=SIZE)


def model_state(out: Path) -> dict[str, torch.Tensor]:
    return torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=True)["model"]


class Interrupted(Exception):
    """Stands for a killed process: the run stops between two steps, its last checkpoint kept."""


def interrupt_after(batches: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The pretrain loader's stream ends with :class:`Interrupted` after ``batches`` micro-batches."""
    real = pretrain_stage.make_loader

    def stopping(*args: Any, **kwargs: Any) -> Iterator[Any]:
        stream = real(*args, **kwargs)
        for index, batch in enumerate(stream):
            if index == batches:
                raise Interrupted
            yield batch
    monkeypatch.setattr(pretrain_stage, "make_loader", stopping)


@pytest.mark.parametrize("method", MOMENTUM)
def test_resumed_run_equals_the_straight_run(world: Path, tmp_path: Path, method: str,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """5 steps straight vs. 3 steps (then stopped) resumed for the last 2: the same state bit for
    bit (online and target weights, MoCo's queue, DINO's centre, batch-norm statistics)."""
    straight = run_pretrain(config(world, method, 5), tmp_path / "straight")
    with monkeypatch.context() as patch:
        interrupt_after(3, patch)
        with pytest.raises(Interrupted):
            run_pretrain(config(world, method, 5), tmp_path / "resumed")
    assert torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=True)["step"] == 3
    resumed = run_pretrain(config(world, method, 5), tmp_path / "resumed")
    assert straight.step == resumed.step == 5 and resumed.resumed_from == 3
    first, second = model_state(tmp_path / "straight"), model_state(tmp_path / "resumed")
    assert set(first) == set(second)
    assert any(f"heads.{method}.target_backbone." in key for key in first)  # the target is checkpointed
    different = [key for key in first if not torch.equal(first[key], second[key])]
    assert not different, different[:5]


@pytest.mark.parametrize("method", MOMENTUM)
def test_engine_moves_the_target_after_each_step(world: Path, tmp_path: Path, method: str) -> None:
    """The target is copied from the online backbone on the first pass, then each optimizer step
    moves it part of the way towards the online weights: after 2 steps it is neither the weights it
    started from nor the online ones."""
    run_pretrain(config(world, method, 2), tmp_path)
    state = model_state(tmp_path)
    prefix = f"heads.{method}.target_backbone."
    target = {key[len(prefix):]: value for key, value in state.items() if key.startswith(prefix)}
    online = {key[len("backbone."):]: value for key, value in state.items() if key.startswith("backbone.")}
    weights = [key for key in target if key.endswith("conv1.weight")]
    assert weights and bool(state[f"heads.{method}.initialized"])
    start = run_initial_backbone(world, method)
    for key in weights:
        assert not torch.equal(target[key], start[key]), f"{key}: the target never moved"
        assert not torch.equal(target[key], online[key]), f"{key}: the target is the online weights"


def run_initial_backbone(world: Path, method: str) -> dict[str, torch.Tensor]:
    """The backbone weights a run of ``method`` starts from (``run_pretrain`` seeds first)."""
    settings = config(world, method, 2)
    checkpoints.seed_everything(settings.train.seed)
    model = build_pretrain_model(settings, build_pretext_tasks(settings, 8))
    return {key: value.clone() for key, value in model.backbone.state_dict().items()}


@pytest.mark.parametrize("method", sorted(SMALL_VIEWS))
def test_loss_is_finite_and_changes(world: Path, tmp_path: Path, method: str) -> None:
    result = run_pretrain(config(world, method, 4), tmp_path)
    entries = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines() if line]
    losses = [entry["loss"] for entry in entries if "loss" in entry]
    assert result.step == 4 and len(losses) == 4
    assert all(math.isfinite(loss) for loss in losses) and len(set(losses)) > 1, losses


def test_help_lists_every_method_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["pretrain", "--help"])
    text = capsys.readouterr().out
    assert set(METHOD_SUMMARIES) == set(METHODS)
    for method, line in METHOD_SUMMARIES.items():
        assert f"  {method}" in text and line[:40] in text, method


def test_momentum_methods_refuse_lasso_and_harmonize() -> None:
    for changes in ({"lasso": 0.01}, {"harmonize": True}):
        with pytest.raises(ConfigError, match="momentum encoder"):
            PretrainConfig(method="multi", tasks=("rotation", "byol"), **changes)
    PretrainConfig(method="multi", tasks=("rotation", "vicreg"), lasso=0.01)  # no momentum: fine


def test_a_momentum_checkpoint_initializes_a_downstream_model(world: Path, tmp_path: Path) -> None:
    """``ModelConfig(init=...)`` (what ``must transfer --init`` uses) takes the online backbone + FPN
    of a BYOL run and leaves its pretext head, target copy included, behind."""
    from must.models import build_model
    from must.tasks import build_task
    run_pretrain(config(world, "byol", 2), tmp_path)
    saved = model_state(tmp_path)
    task = build_task("classification", num_classes=5)
    model = build_model(dataclasses.replace(TINY, init=str(tmp_path / "checkpoint.pt")), {task.name: task})
    loaded = model.state_dict()
    trunk = [key for key in saved if key.startswith(("backbone.", "fpn."))]
    assert trunk and all(torch.equal(loaded[key], saved[key]) for key in trunk)
    assert not any(key.startswith("heads.byol") for key in loaded)
