"""The training weight average: trained weights and their BN statistics averaged, a momentum
encoder's target (already an average) and other frozen state copied from the live model; through
the engine, a stopped and resumed run ends as an uninterrupted one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

from must.data.loader import make_loader
from must.data.sample import Batch
from must.models import ModelConfig, build_model
from must.tasks import build_tasks
from must.tasks.self_supervised.momentum import MomentumHead
from must.train import checkpoint as checkpoints
from must.train.config import TrainConfig, WeightingConfig
from must.train.engine import fit
from must.train.optim import build_ema

from ..conftest import BrightestChannel, StopTraining

DECAY = 0.75


class WithMomentumHead(nn.Module):
    """A conv + BN trunk and a momentum head over it (the layout BYOL / MoCo / DINO use)."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4))
        self.register_buffer("mean", torch.zeros(1, 3, 1, 1))
        self.register_buffer("std", torch.ones(1, 3, 1, 1))
        self.head = MomentumHead(nn.Linear(4, 2), None, base_momentum=0.5, final_momentum=0.5)
        self.head.attach_trunk(self)


def _one_step(model: WithMomentumHead, step: int, steps: int) -> None:
    """What a training step changes: the trained weights (a stand-in optimizer), both trunks' BN
    statistics (training passes) and the target (the momentum update)."""
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.add_(torch.randn_like(parameter))
        images = torch.randn(2, 3, 4, 4) * (step + 1)
        model.backbone(images)
        model.head.target_backbone(images)
    model.head.after_optimizer_step(step, steps)


def test_the_average_copies_the_momentum_target_and_averages_the_trained_state() -> None:
    torch.manual_seed(0)
    model = WithMomentumHead().train()
    model.head.start()
    ema = build_ema(model, DECAY)
    trained = {name for name, parameter in model.named_parameters() if parameter.requires_grad}
    trained |= {"backbone.1.running_mean", "backbone.1.running_var"}
    expected: dict[str, torch.Tensor] = {}
    steps = 4
    for step in range(1, steps + 1):
        _one_step(model, step, steps)
        ema.update_parameters(model)
        live = model.state_dict()
        for name in trained:  # the first update copies, then ema <- decay ema + (1 - decay) theta
            expected[name] = live[name].clone() if name not in expected else (
                DECAY * expected[name] + (1 - DECAY) * live[name])
    average, live = ema.module.state_dict(), model.state_dict()
    assert {name for name in trained if name.startswith("head.projection")} and trained < set(live)
    for name in trained:
        torch.testing.assert_close(average[name], expected[name], msg=name)
    copied = [name for name in live if name not in trained]
    assert any(name.startswith("head.target_backbone") for name in copied)
    for name in copied:  # the target, its BN statistics, the flag, the batch counters
        assert torch.equal(average[name], live[name]), name
    assert average["head.initialized"].dtype == torch.bool and bool(average["head.initialized"])


def test_the_split_is_worked_out_once_not_at_every_step(monkeypatch: pytest.MonkeyPatch) -> None:
    """The trained / copied split walks every module: the train step must not pay for it again."""
    from must.train import weight_average

    calls = []
    split = weight_average.split_trained_state
    monkeypatch.setattr(weight_average, "split_trained_state", lambda *args: calls.append(1) or split(*args))
    model = WithMomentumHead().train()
    ema = build_ema(model, DECAY)
    for step in range(1, 4):
        _one_step(model, step, 3)
        ema.update_parameters(model)
    assert len(calls) == 1


def test_the_average_resumes_from_its_state_dict() -> None:
    torch.manual_seed(0)
    model = WithMomentumHead().train()
    model.head.start()
    ema = build_ema(model, DECAY)
    for step in (1, 2):
        _one_step(model, step, 4)
        ema.update_parameters(model)
    resumed = build_ema(model, DECAY)
    resumed.load_state_dict(ema.state_dict())
    for step in (3, 4):
        _one_step(model, step, 4)
        ema.update_parameters(model)
        resumed.update_parameters(model)
    for name, value in ema.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[name]), name




def _byol_run(out: Path, stop_at: int | None = None) -> None:
    """Classification + BYOL with ``ema_decay`` through the engine; a crash after step ``stop_at``'s
    batch was drawn (the checkpoint of step 2 is on disk)."""

    def stopping(stream: Iterator[Batch], first: int) -> Iterator[Batch]:
        for index, batch in enumerate(stream, start=first):
            if index == stop_at:
                raise StopTraining
            yield batch

    tasks = build_tasks({"classification": {"num_classes": 3}, "byol": {"view_size": 16, "projection_dim": 8,
                                                                         "hidden_dim": 16}})
    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone="resnet18", width=0.125, fpn_channels=8), tasks)
    config = TrainConfig(steps=4, batch_size=4, lr=0.05, ema_decay=0.5, checkpoint_every=2, device="cpu",
                         precision="fp32", progress=False, seed=3, weighting=WeightingConfig(method="equal"))
    fit(model, tasks, lambda first: stopping(make_loader([BrightestChannel()], tasks, 4, 0, 24, first), first), config, out)


def test_a_momentum_run_with_a_weight_average_resumes_exactly_and_keeps_the_live_target(tmp_path: Path) -> None:
    _byol_run(tmp_path / "whole")
    with pytest.raises(StopTraining):
        _byol_run(tmp_path / "stopped", stop_at=2)
    _byol_run(tmp_path / "stopped")
    whole, resumed = (checkpoints.load(tmp_path / name / "checkpoint.pt") for name in ("whole", "stopped"))
    for part in ("model", "ema"):
        for key, value in whole[part].items():
            assert torch.equal(value, resumed[part][key]), (part, key)
    targets = [key for key in whole["model"] if key.startswith("heads.byol.target_")]
    assert targets and all(torch.equal(whole["ema"][f"module.{key}"], whole["model"][key]) for key in targets)
    assert bool(whole["ema"]["module.heads.byol.initialized"])
