"""BYOL, MoCo v2 / v3, DINO, Barlow Twins, VICReg and SimSiam through the common interface on a real
tiny model (the momentum methods copy its backbone): reproducible views, a finite loss whose
gradient reaches every trainable parameter and never the momentum target, prediction, metric,
drawing, batches without views; each loss against lightly or the paper's formula; the momentum
update (BYOL sec. 3.2), the MoCo queue and DINO's centre."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from lightly.loss import BarlowTwinsLoss, DINOLoss, NTXentLoss, VICRegLoss

from must.data.sample import TaskBatch
from must.losses.moco import moco_loss, moco_v3_contrast, moco_v3_loss
from must.models import ModelConfig, MultiTaskModel, build_model
from must.tasks.self_supervised import (BarlowTwinsTask, BYOLTask, DINOTask, MoCoV2Task, MoCoV3Task,
                                        SelfSupervisedTask, SimSiamTask, VICRegTask)
from must.tasks.self_supervised.dino import dino_loss
from must.tasks.self_supervised.momentum import MomentumHead

TINY = ModelConfig(backbone="resnet18", width=0.125, fpn_channels=16)
BUILDERS: dict[str, Callable[[], SelfSupervisedTask]] = {
    "byol": lambda: BYOLTask(view_size=32, projection_dim=16, hidden_dim=32),
    "mocov2": lambda: MoCoV2Task(view_size=32, projection_dim=16, hidden_dim=32, queue_size=8),
    "mocov3": lambda: MoCoV3Task(view_size=32, projection_dim=16, hidden_dim=32),
    "dino": lambda: DINOTask(view_size=32, local_size=16, local_crops=2, output_dim=32, hidden_dim=32,
                             bottleneck_dim=8),
    "barlow_twins": lambda: BarlowTwinsTask(view_size=32, projection_dim=16, hidden_dim=32),
    "vicreg": lambda: VICRegTask(view_size=32, projection_dim=16, hidden_dim=32),
    "simsiam": lambda: SimSiamTask(view_size=32, projection_dim=16, hidden_dim=32, prediction_hidden_dim=8),
}
MOMENTUM = ("byol", "mocov2", "mocov3", "dino")


def build(name: str) -> tuple[SelfSupervisedTask, MultiTaskModel]:
    torch.manual_seed(0)
    task = BUILDERS[name]()
    return task, build_model(TINY, {name: task})


def views_of(task: SelfSupervisedTask, photos: list[torch.Tensor], absent: bool = True) -> TaskBatch:
    generator = torch.Generator().manual_seed(0)
    views = [task.make_views(photo, generator, index=i) for i, photo in enumerate(photos)]
    return task.collate([views[0], None, *views[1:]] if absent else views)


def test_registry_builds_every_method() -> None:
    from must.tasks.self_supervised import SELF_SUPERVISED_TASKS
    for name in BUILDERS:
        assert SELF_SUPERVISED_TASKS[name]().name == name


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_views_are_reproducible(name: str, photos: list[torch.Tensor]) -> None:
    task = BUILDERS[name]()
    first = task.make_views(photos[0], torch.Generator().manual_seed(3))
    again = task.make_views(photos[0], torch.Generator().manual_seed(3))
    assert first.keys() == again.keys() and all(torch.equal(first[k], again[k]) for k in first)
    assert first["views"].shape == (2, 3, 32, 32) and first["views"].dtype == torch.uint8
    if name == "dino":  # multi-crop: two global crops and the small local ones
        assert first["local"].shape == (2, 3, 16, 16)


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_forward_loss_gradients(name: str, photos: list[torch.Tensor]) -> None:
    task, model = build(name)
    batch = views_of(task, photos)
    assert batch.present.tolist() == [True, False, True, True, True]
    output = model(None, {name: batch})[name]
    losses = task.loss(output, batch)
    assert torch.isfinite(losses["loss"]) and losses["loss"].dim() == 0
    losses["loss"].backward()
    for parameter_name, parameter in model.named_parameters():
        if parameter_name.startswith("fpn."):  # these heads read pooled C5: the FPN stays unused
            assert parameter.grad is None
        elif ".target_" in parameter_name or not parameter.requires_grad:  # momentum copy, DINO's fixed norm
            assert not parameter.requires_grad and parameter.grad is None, parameter_name
        else:
            assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), parameter_name
    predictions = task.predict(output)
    assert len(predictions) == 4
    metric = task.metric()
    metric.update(output, batch)
    assert 0.0 <= metric.compute()["accuracy"] <= 1.0
    drawn = task.draw(np.zeros((48, 48, 3), dtype=np.uint8), predictions[0])
    assert drawn.dtype == np.uint8 and drawn.shape[1] == 48


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_batch_without_views(name: str) -> None:
    task, model = build(name)
    batch = task.collate([None, None])
    assert model(None, {name: batch})[name] is None
    assert float(task.loss(None, batch)["loss"]) == 0.0


# --- losses against lightly or the paper's formula ------------------------------------------------


def test_byol_loss_is_the_papers_symmetrized_mse_up_to_an_affine_map() -> None:
    """BYOL eq. 2: ``||q_bar - z_bar'||^2 = 2 - 2 cos``; ``L + L~ = 4 + 4 x ours``."""
    p1, p2, z1, z2 = (torch.randn(6, 8) for _ in range(4))
    ours = BYOLTask().view_loss({"prediction_first": p1, "prediction_second": p2,
                                 "target_first": z1, "target_second": z2})["loss"]
    def mse(q: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return ((F.normalize(q, dim=1) - F.normalize(z, dim=1)) ** 2).sum(dim=1).mean()
    assert torch.allclose(mse(p1, z2) + mse(p2, z1), 4 + 4 * ours, atol=1e-5)


def test_simsiam_loss_is_eq_3() -> None:
    p1, p2, z1, z2 = (torch.randn(6, 8, requires_grad=True) for _ in range(4))
    ours = SimSiamTask().view_loss({"prediction_first": p1, "prediction_second": p2, "first": z1, "second": z2})
    expected = -(F.cosine_similarity(p1, z2).mean() + F.cosine_similarity(p2, z1).mean()) / 2
    assert torch.allclose(ours["loss"], expected, atol=1e-6)
    ours["loss"].backward()
    assert z1.grad is None and z2.grad is None  # the stop-gradient


def test_mocov2_loss_equals_lightly_ntxent_with_a_memory_bank() -> None:
    query, key, queue = torch.randn(5, 8), torch.randn(5, 8), F.normalize(torch.randn(12, 8), dim=1)
    reference = NTXentLoss(temperature=0.2, memory_bank_size=(12, 8))
    reference.memory_bank.bank = queue.clone()
    assert torch.allclose(moco_loss(query, key, queue, 0.2), reference(query, key), atol=1e-5)


def test_mocov3_loss_is_algorithm_1() -> None:
    """``ctr(q, k) = 2 tau CE(q k^T / tau, i)`` term by term."""
    q1, q2, k1, k2 = (torch.randn(5, 8) for _ in range(4))
    def naive(q: torch.Tensor, k: torch.Tensor, tau: float) -> torch.Tensor:
        q, k = F.normalize(q, dim=1).double(), F.normalize(k, dim=1).double()
        terms = [-torch.log(torch.exp(q[i] @ k[i] / tau) / sum(torch.exp(q[i] @ k[j] / tau) for j in range(5)))
                 for i in range(5)]
        return 2 * tau * torch.stack(terms).mean()
    assert torch.allclose(moco_v3_contrast(q1, k2, 0.2).double(), naive(q1, k2, 0.2), atol=1e-5)
    expected = naive(q1, k2, 0.2) + naive(q2, k1, 0.2)
    assert torch.allclose(moco_v3_loss(q1, q2, k1, k2, 0.2).double(), expected, atol=1e-5)


def test_dino_loss_and_centre_equal_lightly() -> None:
    task = DINOTask(output_dim=16, teacher_temperature=0.04, student_temperature=0.1, center_momentum=0.9)
    head = task.build_head(_spec())
    teacher = [torch.randn(4, 16) for _ in range(2)]
    student = [torch.randn(4, 16) for _ in range(5)]  # two global crops, three local ones
    reference = DINOLoss(output_dim=16, teacher_temp=0.04, student_temp=0.1, center_momentum=0.9)
    for _ in range(2):  # the second pass uses the centre the first one moved
        stacked = torch.stack(teacher)
        probabilities = F.softmax((stacked - head.center) / 0.04, dim=-1)
        ours = dino_loss(probabilities, torch.stack(student), 0.1)
        head.update_center(stacked)
        expected = reference(teacher, student, teacher_temp=0.04)
        assert torch.allclose(ours, expected, atol=1e-5)
        assert torch.allclose(head.center, reference.center[0], atol=1e-6)
        teacher = [t + 1.0 for t in teacher]


def test_barlow_twins_loss_is_eq_1_and_equals_lightly() -> None:
    first, second = torch.randn(7, 6), torch.randn(7, 6)
    ours = BarlowTwinsTask(redundancy_weight=5e-3).view_loss({"first": first, "second": second})["loss"]
    a = (first - first.mean(0)) / first.std(0, unbiased=False)
    b = (second - second.mean(0)) / second.std(0, unbiased=False)
    c = a.T @ b / 7
    off_diagonal = c - torch.diag(torch.diagonal(c))
    expected = ((1 - torch.diagonal(c)) ** 2).sum() + 5e-3 * (off_diagonal ** 2).sum()
    assert torch.allclose(ours, expected, rtol=1e-4)
    assert torch.allclose(ours, BarlowTwinsLoss(lambda_param=5e-3)(first, second), rtol=1e-5)


def test_vicreg_loss_is_eq_6_and_equals_lightly() -> None:
    first, second = torch.randn(7, 6), torch.randn(7, 6)
    ours = VICRegTask().view_loss({"first": first, "second": second})["loss"]
    def variance(z: torch.Tensor) -> torch.Tensor:  # eq. 1, gamma = 1
        return F.relu(1 - torch.sqrt(z.var(dim=0) + 1e-4)).mean()
    def covariance(z: torch.Tensor) -> torch.Tensor:  # eq. 3-4
        centred = z - z.mean(0)
        cov = centred.T @ centred / (z.shape[0] - 1)
        return ((cov - torch.diag(torch.diagonal(cov))) ** 2).sum() / z.shape[1]
    invariance = ((first - second) ** 2).sum(dim=1).mean() / first.shape[1]  # eq. 5, per dimension
    expected = 25 * invariance + 25 * (variance(first) + variance(second)) / 2 + covariance(first) + covariance(second)
    assert torch.allclose(ours, expected, rtol=1e-4)
    assert torch.allclose(ours, VICRegLoss()(first, second), rtol=1e-5)


# --- momentum encoder, queue ----------------------------------------------------------------------


def _spec():
    from must.models.features import FeatureSpec
    return FeatureSpec(c5_channels=8, fpn_channels=4, stage_channels=(2, 4, 6, 8))


@pytest.mark.parametrize("name", MOMENTUM)
def test_target_starts_as_online_then_follows_the_ema(name: str, photos: list[torch.Tensor]) -> None:
    task, model = build(name)
    head: MomentumHead = model.heads[name]
    with torch.no_grad():  # initial weights loaded after construction: the copy is taken at the first pass
        for parameter in model.backbone.parameters():
            parameter.add_(0.1)
    assert not head.initialized
    task.loss(model(None, {name: views_of(task, photos)})[name], None)
    assert head.initialized
    online, target = dict(model.backbone.named_parameters()), dict(head.target_backbone.named_parameters())
    assert all(torch.equal(online[key], target[key]) for key in online)
    before = {key: value.clone() for key, value in target.items()}
    with torch.no_grad():
        for parameter in model.backbone.parameters():
            parameter.add_(1.0)
    head.after_optimizer_step(1, 10)
    tau = head.momentum(0, 10)  # after the first step (index 0): tau_base
    assert tau == pytest.approx(head.base_momentum)
    assert head.base_momentum <= tau <= head.final_momentum
    for key in online:
        torch.testing.assert_close(target[key], tau * before[key] + (1 - tau) * online[key])


def test_momentum_follows_byols_cosine_schedule() -> None:
    """BYOL sec. 3.2: ``tau = 1 - (1 - tau_base) (cos(pi k / K) + 1) / 2`` from ``tau_base`` to 1."""
    head = BYOLTask(base_momentum=0.99).build_head(_spec())
    assert head.momentum(0, 11) == pytest.approx(0.99)
    assert head.momentum(5, 11) == pytest.approx(1 - 0.01 * (math.cos(math.pi * 5 / 10) + 1) / 2)
    assert head.momentum(10, 11) == pytest.approx(1.0)
    constant = MoCoV2Task(momentum=0.999).build_head(_spec())
    assert constant.momentum(0, 11) == constant.momentum(7, 11) == pytest.approx(0.999)


def test_moco_queue_takes_the_keys_in_order_and_wraps() -> None:
    head = MoCoV2Task(queue_size=5, projection_dim=3).build_head(_spec())
    keys = F.normalize(torch.randn(7, 3), dim=1)
    head.enqueue(keys[:3])
    assert torch.allclose(head.queue[:3], keys[:3]) and int(head.queue_position) == 3
    head.enqueue(keys[3:7])  # 4 keys into slots 3, 4, 0, 1
    assert torch.allclose(head.queue[[3, 4, 0, 1]], keys[3:7]) and int(head.queue_position) == 2


def test_evaluation_passes_leave_the_state_alone(photos: list[torch.Tensor]) -> None:
    for name in ("mocov2", "dino"):
        task, model = build(name)
        model.eval()
        state = {key: value.clone() for key, value in model.state_dict().items()}
        with torch.no_grad():
            model(None, {name: views_of(task, photos)})
        assert all(torch.equal(state[key], value) for key, value in model.state_dict().items()), name


@pytest.mark.parametrize("name", MOMENTUM)
def test_a_deep_copy_tracks_its_own_backbone(name: str) -> None:
    """The engine's weight average (``ema_decay``) deep-copies the model: the copy's target must
    follow the copy's backbone, not the original's (DINO's weight norm must survive the copy)."""
    import copy
    _, model = build(name)
    clone = copy.deepcopy(model)
    assert clone.heads[name].model is clone
    assert clone.heads[name].target_backbone is not model.heads[name].target_backbone


def test_student_trains_a_supervised_task_and_byol_together(photos: list[torch.Tensor]) -> None:
    """One model, a classification head and BYOL's head on one trunk (MuST sec. 3.3 with a
    self-supervised task): both losses reach the backbone, BYOL's target stays out of training."""
    from must.tasks.classification import ClassificationTask
    classification, byol = ClassificationTask(3), BUILDERS["byol"]()
    model = build_model(TINY, {"classification": classification, "byol": byol})
    images = torch.stack([photo.float() / 255 for photo in photos])
    labels = classification.collate([torch.tensor(i % 3) for i in range(4)])
    outputs = model(images, {"classification": labels, "byol": views_of(byol, photos, absent=False)})
    total = (classification.loss(outputs["classification"], labels)["loss"]
             + byol.loss(outputs["byol"], None)["loss"])
    total.backward()
    assert model.backbone.conv1.weight.grad is not None
    assert all(parameter.grad is None for parameter in model.heads["byol"].target_backbone.parameters())


@pytest.mark.parametrize("name", MOMENTUM)
def test_first_training_pass_without_views_starts_the_target(name: str) -> None:
    """Under DDP a rank whose first batch has no views must start its target from the same weights
    as the others: the copy happens at the first training pass, views or not."""
    task, model = build(name)
    head: MomentumHead = model.heads[name]
    model.train()
    assert model(None, {name: task.collate([None, None])})[name] is None
    assert head.initialized
    online, target = model.backbone.state_dict(), head.target_backbone.state_dict()
    assert all(torch.equal(online[key], target[key]) for key in online)


@pytest.mark.parametrize("name,options", [("byol", {"base_momentum": 1.5}), ("mocov2", {"queue_size": 0}),
                                          ("mocov3", {"temperature": 0.0}), ("dino", {"local_crops": -1}),
                                          ("dino", {"base_momentum": 0.9, "final_momentum": 0.5})])
def test_bad_options_are_config_errors_naming_the_task(name: str, options: dict) -> None:
    from must.errors import ConfigError
    from must.tasks import build_task
    with pytest.raises(ConfigError, match=f"task '{name}'"):
        build_task(name, **options)
