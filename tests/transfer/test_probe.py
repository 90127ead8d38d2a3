"""The linear probe's freezing (SPEC D5): no trunk gradients, trunk norms in eval mode whatever
``train()`` calls come, heads still train."""

from __future__ import annotations

import torch

from must.models import build_model
from must.tasks import build_task
from must.transfer.probe import freeze_trunk, is_frozen

from .conftest import TINY_MODEL


def test_trunk_stays_frozen_through_train_calls() -> None:
    task = build_task("classification", num_classes=3)
    model = build_model(TINY_MODEL, {task.name: task})
    trainable = freeze_trunk(model)
    assert {id(p) for p in trainable} == {id(p) for p in model.heads.parameters()}
    model.train()
    assert is_frozen(model.backbone) and is_frozen(model.fpn)
    assert model.heads.training and model.training
    stats = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    output = model(torch.rand(4, 3, 32, 32))["classification"]
    output.sum().backward()
    assert all(torch.equal(stats[k], v) for k, v in model.backbone.state_dict().items())  # BN stats too
    assert all(p.grad is None for p in model.backbone.parameters())
    assert model.heads["classification"].linear.weight.grad is not None
    model.eval()
    model.train(True)
    assert is_frozen(model.backbone)


def test_unfrozen_model_is_not_reported_frozen() -> None:
    task = build_task("depth")
    model = build_model(TINY_MODEL, {task.name: task}).train()
    assert not is_frozen(model.backbone)
