"""Doersch & Zisserman 2017: alternating and joint schedules, harmonization, the lasso model on a
narrow ResNet-FPN trained both ways with pretext and evaluation tasks."""

import pytest
import torch

from must.errors import ConfigError
from must.models import ModelConfig, build_model
from must.models.lasso import LassoMixing
from must.tasks.classification import ClassificationTask
from must.tasks.self_supervised.colorization import rgb_to_lab
from must.tasks.self_supervised.doersch import (
    AlternateSchedule,
    DoerschMultiTaskModel,
    JointSchedule,
    build_schedule,
    harmonize,
    lasso_features,
)
from must.tasks.self_supervised.relative_position import RelativePositionTask
from must.tasks.self_supervised.rotation import RotationTask

TASKS = ("rotation", "relative_position", "classification")


def test_alternate_schedule() -> None:
    schedule = AlternateSchedule(["a", "b", "c"], cycles_per_update=2, seed=5)
    assert schedule.steps_per_update == 6 and schedule.loss_scale == 0.5
    sequence = [schedule.active(step) for step in range(30)]
    assert all(len(active) == 1 for active in sequence)
    for cycle in range(10):  # every task exactly once per cycle
        assert sorted(name for (name,) in sequence[3 * cycle:3 * cycle + 3]) == ["a", "b", "c"]
    assert len({tuple(sequence[3 * c:3 * c + 3]) for c in range(10)}) > 1  # shuffled per cycle
    resumed = AlternateSchedule(["a", "b", "c"], 2, seed=5)  # stateless: a resumed run continues
    assert sequence == [resumed.active(step) for step in range(30)]
    assert [schedule.is_update_step(s) for s in range(12)] == [False] * 5 + [True] + [False] * 5 + [True]
    fixed = AlternateSchedule(["a", "b"], shuffle=False)
    assert [fixed.active(s) for s in range(4)] == [("a",), ("b",), ("a",), ("b",)]


def test_joint_schedule_and_registry() -> None:
    schedule = build_schedule("joint", ["a", "b"])
    assert isinstance(schedule, JointSchedule)
    assert schedule.active(7) == ("a", "b") and schedule.is_update_step(7) and schedule.loss_scale == 1.0
    assert isinstance(build_schedule("alternate", ["a"]), AlternateSchedule)
    with pytest.raises(ConfigError, match="alternate, joint"):
        build_schedule("round_robin", ["a"])


def test_harmonize_keeps_only_lightness(photos: list[torch.Tensor]) -> None:
    gray = harmonize(photos[0])
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])
    unit = photos[0].float()[None] / 255
    harmonized = harmonize(unit)
    assert harmonized.shape == unit.shape and harmonized.dtype == unit.dtype
    assert torch.allclose(rgb_to_lab(harmonized)[:, 0], rgb_to_lab(unit)[:, 0], atol=1e-3)
    assert rgb_to_lab(harmonized)[:, 1:].abs().max() < 0.5  # no colour left
    assert torch.allclose(harmonize(harmonized), harmonized, atol=1e-5)


def test_lasso_features_replace_c5(trunk) -> None:
    features = trunk.features(torch.rand(2, 3, 64, 64))
    lasso = LassoMixing(["t"], trunk.spec.stage_channels, trunk.spec.c5_channels)
    mixed = lasso_features(features, lasso, "t")
    assert mixed.c5.shape == features.c5.shape and not torch.equal(mixed.c5, features.c5)
    assert mixed.stages["c2"] is features.stages["c2"] and mixed.pyramid is features.pyramid


GRAY_NORMALIZATION = {"mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25)}
"""The same per channel: a gray input stays gray after the model's normalization."""


def build(lasso_weight: float | None = 1e-3, harmonized: bool = False) -> DoerschMultiTaskModel:
    tasks = [RotationTask(view_size=32, hidden_dim=32),
             RelativePositionTask(view_size=48, patch_size=14, gap=2, jitter=1, embedding_dim=16,
                                  hidden_dim=32),
             ClassificationTask(4)]
    torch.manual_seed(0)
    config = ModelConfig(backbone="resnet18", width=0.125, fpn_channels=16, **GRAY_NORMALIZATION)
    model = build_model(config, {task.name: task for task in tasks})
    return DoerschMultiTaskModel(model, lasso_weight, harmonized)


def batch(model: DoerschMultiTaskModel, photos: list[torch.Tensor]) -> tuple[torch.Tensor, dict]:
    generator = torch.Generator().manual_seed(0)
    targets = {}
    for name in ("rotation", "relative_position"):
        task = model.view_tasks[name]
        targets[name] = task.collate([task.make_views(photo, generator) for photo in photos])
    targets["classification"] = CLASSIFICATION.collate([torch.tensor(i) for i in range(4)])
    return torch.stack(photos).float() / 255, targets


CLASSIFICATION = ClassificationTask(4)


def total_loss(model: DoerschMultiTaskModel, images, targets, names) -> tuple[torch.Tensor, dict[str, float]]:
    outputs = model(images, targets, tasks=names)
    tasks = {**model.view_tasks, "classification": CLASSIFICATION}
    parts = {name: tasks[name].loss(outputs[name], targets[name])["loss"] for name in names}
    values = {name: float(value.detach()) for name, value in parts.items()}
    return sum(parts[name] + model.penalty(name) for name in names), values


@pytest.mark.parametrize("schedule_name", ["alternate", "joint"])
def test_trains_with_lasso(schedule_name: str, photos) -> None:
    model = build()
    images, targets = batch(model, photos)
    schedule = build_schedule(schedule_name, list(TASKS))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    _, before = total_loss(model, images, targets, TASKS)
    steps = 60 if schedule_name == "alternate" else 20  # the same number of task-iterations
    for step in range(steps):
        loss, _ = total_loss(model, images, targets, schedule.active(step))
        (loss * schedule.loss_scale).backward()
        if schedule.is_update_step(step):
            optimizer.step()
            optimizer.zero_grad()
    _, after = total_loss(model, images, targets, TASKS)
    for name in TASKS:
        assert after[name] < 0.8 * before[name], (name, before, after)


def test_only_the_active_row_learns_from_its_task(photos) -> None:
    model = build(lasso_weight=0.0)
    images, targets = batch(model, photos)
    loss, _ = total_loss(model, images, targets, ("relative_position",))
    loss.backward()
    gradient = model.lasso.alpha.grad
    row = model.lasso.task_index("relative_position")
    assert gradient[row].abs().sum() > 0
    assert gradient[[i for i in range(3) if i != row]].abs().sum() == 0
    assert model.lasso.matrix.shape == (3, 4) and model.lasso.unit_names == ["c2", "c3", "c4", "c5"]


def test_harmonized_model_feeds_lightness_only(photos) -> None:
    model = build(lasso_weight=None, harmonized=True)
    seen = []
    model.backbone.register_forward_pre_hook(lambda module, inputs: seen.append(inputs[0]))
    images, targets = batch(model, photos)
    model(images, targets)
    assert len(seen) == 3 and all(model.penalty(name) == 0 for name in TASKS)
    for inputs in seen:
        assert torch.equal(inputs[:, 0], inputs[:, 1]) and torch.equal(inputs[:, 1], inputs[:, 2])


def test_views_leave_running_statistics_to_the_evaluation_task(photos) -> None:
    """Running averages follow the evaluation task's images when it is in the pass; a pass of
    pretext tasks alone updates them."""
    model = build(lasso_weight=None).train()
    images, targets = batch(model, photos)
    norm = model.backbone.bn1
    initial = {name: value.clone() for name, value in model.state_dict().items()}
    model(images, targets, tasks=["classification"])
    supervised_only = norm.running_mean.clone()
    model.load_state_dict(initial)
    model(images, targets)
    assert torch.equal(norm.running_mean, supervised_only)
    model.load_state_dict(initial)
    model(images, targets, tasks=["rotation", "relative_position"])
    assert not torch.equal(norm.running_mean, initial["backbone.bn1.running_mean"])
