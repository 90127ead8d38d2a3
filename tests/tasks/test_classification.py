"""Classification task: soft-target KL with temperature / smoothing / background against plain loops,
top-k metrics, pseudo labels, collate, draw, and an overfit run."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from must.data.geometry import Geometry
from must.errors import ConfigError
from must.models.features import Features, FeatureSpec
from must.tasks import TASK_BUILDERS, build_task
from must.tasks.classification import ClassificationTask, soft_target_kl

from .conftest import overfit_losses

SPEC = FeatureSpec(c5_channels=16, fpn_channels=8)


def make_features(batch: int, size: tuple[int, int] = (32, 32)) -> Features:
    return Features.random(SPEC, batch, size)


def naive_loss(logits: np.ndarray, targets: list[np.ndarray | None], temperature: float,
               smoothing: float) -> float:
    """Hinton et al. with the teacher softened as p^(1/T), smoothing over the target's classes."""
    losses = []
    for row, target in zip(logits, targets):
        if target is None:
            continue
        q = target ** (1 / temperature)
        q = q / q.sum()
        q = (1 - smoothing) * q + smoothing / len(q)
        q = np.concatenate([q, np.zeros(len(row) - len(q))])
        scaled = row / temperature
        log_softmax = scaled - np.log(np.exp(scaled).sum())
        entropy = -(q[q > 0] * np.log(q[q > 0])).sum()
        losses.append((-(q * log_softmax).sum() - entropy) * temperature**2)
    return float(np.mean(losses))


@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_one_hot_loss_equals_torch(smoothing: float) -> None:
    """torch's KL divergence always; torch's cross-entropy too where the target has no entropy."""
    logits, labels = torch.randn(6, 5), torch.randint(0, 5, (6,))
    ours = soft_target_kl(logits, F.one_hot(labels, 5).float(), label_smoothing=smoothing).mean()
    smoothed = F.one_hot(labels, 5).float() * (1 - smoothing) + smoothing / 5
    torch.testing.assert_close(ours, F.kl_div(F.log_softmax(logits, dim=1), smoothed, reduction="batchmean"))
    if smoothing == 0:
        torch.testing.assert_close(ours, F.cross_entropy(logits, labels))


def test_soft_target_loss_is_zero_at_the_target_with_the_cross_entropy_gradient() -> None:
    """A soft pseudo label's loss reaches 0 at the target (a cross-entropy would stop at the
    target's entropy, which loss-value weightings read as a task that does not learn), and trains
    exactly as the soft cross-entropy does."""
    target = torch.softmax(torch.randn(4, 6) * 2, dim=1)
    torch.testing.assert_close(soft_target_kl(target.log(), target, 2.0), torch.zeros(4), atol=1e-5, rtol=0)
    # never below 0, also where float32 rounding would take it there (weightings take its log)
    many = torch.softmax(torch.randn(20000, 6) * 3, dim=1)
    assert bool((soft_target_kl(many.log(), many) >= 0).all())
    logits = torch.randn(4, 6, requires_grad=True)
    soft_target_kl(logits, target, 2.0).sum().backward()
    cross_entropy = -(F.softmax(torch.log(target) / 2.0, dim=1) * F.log_softmax(logits / 2.0, dim=1)).sum() * 4.0
    expected = torch.autograd.grad(cross_entropy, logits)[0]
    torch.testing.assert_close(logits.grad, expected)


@pytest.mark.parametrize(("temperature", "smoothing", "background"),
                         [(1.0, 0.0, False), (2.0, 0.0, False), (3.0, 0.1, False), (1.5, 0.1, True)])
def test_loss_matches_naive_reference(temperature: float, smoothing: float, background: bool) -> None:
    task = ClassificationTask(4, temperature=temperature, label_smoothing=smoothing, background_class=background)
    soft = torch.softmax(torch.randn(4), 0)
    targets = [torch.tensor(2), None, soft, torch.tensor(0), None]
    logits = torch.randn(5, task.num_outputs, dtype=torch.float64)
    loss = task.loss(logits, task.collate(targets))["loss"]
    numpy_targets = [None if t is None else F.one_hot(t, 4).double().numpy() if t.dim() == 0 else t.double().numpy()
                     for t in targets]
    expected = naive_loss(logits.numpy(), numpy_targets, temperature, smoothing)
    assert math.isclose(float(loss), expected, rel_tol=1e-5)


def test_absent_images_do_not_change_the_loss() -> None:
    task = ClassificationTask(3)
    logits = torch.randn(3, 3)
    with_absent = task.loss(logits, task.collate([torch.tensor(1), None, torch.tensor(2)]))["loss"]
    without = task.loss(logits[[0, 2]], task.collate([torch.tensor(1), torch.tensor(2)]))["loss"]
    torch.testing.assert_close(with_absent, without)


def test_no_target_gives_zero_loss_with_a_graph() -> None:
    task = ClassificationTask(3)
    head = task.build_head(SPEC)
    loss = task.loss(head(make_features(2)), task.collate([None, None]))["loss"]
    assert loss.item() == 0.0
    loss.backward()
    assert all(p.grad is not None for p in head.parameters())


def test_background_class_adds_an_output_never_targeted() -> None:
    task = ClassificationTask(3, background_class=True, label_smoothing=0.3)
    assert task.build_head(SPEC)(make_features(2)).shape == (2, 4)
    logits = torch.zeros(1, 4, requires_grad=True)
    task.loss(logits, task.collate([torch.tensor(0)]))["loss"].backward()
    # the gradient of CE is softmax - target: the background's target is 0 even with smoothing
    torch.testing.assert_close(logits.grad[0, 3], torch.tensor(0.25))


def test_collate() -> None:
    task = ClassificationTask(3)
    batch = task.collate([torch.tensor(2), None, torch.tensor([0.2, 0.5, 0.3]), 0])
    assert batch.present.tolist() == [True, False, True, True]
    torch.testing.assert_close(batch.value, torch.tensor(
        [[0, 0, 1.0], [0, 0, 0], [0.2, 0.5, 0.3], [1.0, 0, 0]]))
    with pytest.raises(ValueError, match="outside"):
        task.collate([torch.tensor(3)])
    with pytest.raises(ValueError, match="shape"):
        task.collate([torch.ones(4) / 4])


def test_metric_hand_worked_example() -> None:
    task = ClassificationTask(6)
    metric = task.metric()
    logits = torch.tensor([
        [9.0, 8, 7, 6, 5, 4],   # label 0: top-1 hit
        [9.0, 8, 7, 6, 5, 4],   # label 3: top-5 hit only
        [9.0, 8, 7, 6, 5, 4],   # label 5: miss
        [0.0, 0, 0, 0, 0, 9],   # absent: not counted
        [0.0, 1, 0, 0, 0, 0],   # label 1 (soft target argmax): top-1 hit
    ])
    targets = [torch.tensor(0), torch.tensor(3), torch.tensor(5), None, torch.tensor([0.1, 0.6, 0.1, 0.1, 0.05, 0.05])]
    metric.update(logits, task.collate(targets))
    assert metric.compute() == pytest.approx({"top1": 0.5, "top5": 0.75})
    metric.reset()
    generator = torch.Generator().manual_seed(1)
    logits, labels = torch.randn(50, 6, generator=generator), torch.randint(0, 6, (50,), generator=generator)
    for rows in (slice(0, 20), slice(20, 50)):
        metric.update(logits[rows], task.collate(list(labels[rows])))
    ranks = (logits > logits.gather(1, labels[:, None])).sum(1).numpy()
    assert metric.compute() == pytest.approx({"top1": (ranks < 1).mean(), "top5": (ranks < 5).mean()})


def test_predict_and_pseudo_labels() -> None:
    task = ClassificationTask(4)
    logits = torch.tensor([[2.0, 1.0, 0.5, -1.0]])
    (prediction,) = task.predict(logits)
    torch.testing.assert_close(prediction, torch.softmax(logits[0], 0))
    torch.testing.assert_close(task.to_pseudo_label(prediction, threshold=0.9), prediction)  # threshold unused
    top2 = ClassificationTask(4, top_k=2).to_pseudo_label(prediction)
    kept = prediction[:2] / prediction[:2].sum()
    torch.testing.assert_close(top2, torch.cat([kept, torch.zeros(2)]))
    with_background = ClassificationTask(3, background_class=True)
    label = with_background.to_pseudo_label(prediction)
    torch.testing.assert_close(label, prediction[:3] / prediction[:3].sum())


def test_transform_draw_describe_and_registry() -> None:
    task = build_task("classification", num_classes=2, class_names=["cat", "dog"])
    assert TASK_BUILDERS["classification"] is ClassificationTask
    label = torch.tensor(1)
    geometry = Geometry.random((40, 50), 32, torch.Generator().manual_seed(0))
    assert task.transform_target(label, geometry) is label
    image = np.full((48, 64, 3), 128, dtype=np.uint8)
    drawn = task.draw(image, torch.tensor([0.1, 0.9]))
    assert drawn.shape == image.shape and drawn.dtype == np.uint8
    assert (drawn[:10] != 128).any() and (drawn[-10:] == 128).all()  # text in the corner only
    assert task.describe() == {"name": "classification", "num_classes": 2, "class_names": ["cat", "dog"],
                               "background_class": False}
    with pytest.raises(ConfigError, match="choose one of"):
        build_task("clasification")


def test_head_overfits_four_samples() -> None:
    task = ClassificationTask(5, temperature=2.0)
    head = task.build_head(SPEC)
    features = make_features(4)
    target = task.collate([torch.tensor(0), torch.softmax(torch.randn(5) * 3, 0), torch.tensor(4), torch.tensor(2)])
    losses = overfit_losses(task, head, features, target, 200, lr=0.05)
    # the loss of a soft target is a KL divergence: its floor is 0 (up to the float error here)
    floor = soft_target_kl(torch.log(target.value[1:2].clamp_min(1e-12)), target.value[1:2], 2.0)
    entropy_floor = float(floor) / 4
    assert (losses[-1] - entropy_floor) < 0.1 * (losses[0] - entropy_floor)
