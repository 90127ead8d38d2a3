"""What the semi-supervised rules learn outside the weights (FlexMatch's per-image memory,
FreeMatch's and SoftMatch's moving averages) and Mean Teacher's weight-averaged teacher survive a
checkpoint: a run stopped at step 2 and resumed ends where an uninterrupted run ends."""

from pathlib import Path

import pytest
import torch

from must.data.loader import make_loader
from must.models import ModelConfig, build_model
from must.tasks import build_tasks
from must.train import checkpoint as checkpoints
from must.train.config import TrainConfig, WeightingConfig
from must.train.engine import fit

from ...conftest import BrightestChannel, StopTraining

SEMI = ("flexmatch_classification", "freematch_classification", "softmatch_classification",
        "mean_teacher_classification")




def stopping(stream, first: int, stop_at: int | None):
    for index, batch in enumerate(stream, start=first):
        if index == stop_at:
            raise StopTraining  # a crash after the checkpoint of step 2
        yield batch


def run(out: Path, stop_at: int | None = None) -> dict:
    options = {"classification": {"num_classes": 3}, **{name: {"view_size": 16} for name in SEMI}}
    options["flexmatch_classification"]["threshold"] = 0.4  # some images become confident early
    tasks = build_tasks(options)
    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone="resnet18", width=0.125, fpn_channels=8), tasks)
    config = TrainConfig(steps=4, batch_size=4, lr=0.05, ema_decay=0.5, checkpoint_every=2, device="cpu",
                         precision="fp32", progress=False, seed=3, weighting=WeightingConfig(method="equal"))
    fit(model, tasks, lambda first: stopping(make_loader([BrightestChannel()], tasks, 4, 3, 24, first), first, stop_at),
        config, out)
    return {name: tasks[name].state_dict() for name in SEMI if name != "mean_teacher_classification"}


def test_stopped_and_resumed_run_ends_with_the_same_state(tmp_path: Path) -> None:
    whole = run(tmp_path / "whole")
    with pytest.raises(StopTraining):
        run(tmp_path / "stopped", stop_at=2)
    resumed = run(tmp_path / "stopped")
    assert (whole["flexmatch_classification"]["selected"] >= 0).any()
    for name, state in whole.items():
        for key, value in state.items():
            assert torch.equal(value, resumed[name][key]), (name, key)
    first = checkpoints.load(tmp_path / "whole" / "checkpoint.pt")
    second = checkpoints.load(tmp_path / "stopped" / "checkpoint.pt")
    for key, value in first["model"].items():
        assert torch.equal(value, second["model"][key]), key
    for key, value in first["ema"].items():  # Mean Teacher's teacher
        assert torch.equal(value, second["ema"][key]), key
