"""Distillation: the soft term against the KL formula and its known gradient, the T^2 factor, the
virtual teacher, label smoothing as its T = 1 case, target formats, the alpha mixture, training."""

from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F

from must.data.sample import TaskBatch
from must.models.features import Features, FeatureSpec
from must.tasks.classification import soft_target_kl
from must.tasks.distillation import NO_LABEL, DistillationTask, distillation_loss, virtual_teacher


def test_soft_term_is_scaled_kl() -> None:
    student, teacher_logits = torch.randn(5, 6), torch.randn(5, 6)
    teacher = F.softmax(teacher_logits, dim=1)
    for temperature in (1.0, 2.0, 4.0):
        p = F.softmax(teacher_logits / temperature, dim=1)  # the teacher at T, from its logits
        q = F.softmax(student / temperature, dim=1)
        expected = temperature**2 * (p * (p.log() - q.log())).sum(dim=1)
        assert torch.allclose(distillation_loss(student, teacher, temperature), expected, atol=1e-5)


def test_gradient_is_t_times_probability_gap() -> None:
    """Hinton et al. sec. 2: d/dz of T^2 KL = T (softmax(z / T) - p_T): its size does not shrink as
    1 / T^2 like the unscaled term's would."""
    student = torch.randn(3, 5, requires_grad=True)
    teacher_logits = torch.randn(3, 5)
    temperature = 3.0
    distillation_loss(student, F.softmax(teacher_logits, dim=1), temperature).sum().backward()
    gap = F.softmax(student / temperature, dim=1) - F.softmax(teacher_logits / temperature, dim=1)
    expected = temperature * gap
    assert torch.allclose(student.grad, expected.detach(), atol=1e-5)


def test_same_loss_as_the_classification_task() -> None:
    student = torch.randn(4, 5, requires_grad=True)
    teacher = F.softmax(torch.randn(4, 5), dim=1)
    distillation_loss(student, teacher, 2.0).sum().backward()
    ours = student.grad.clone()
    student.grad = None
    soft_target_kl(student, teacher, 2.0).sum().backward()
    assert torch.allclose(ours, student.grad, atol=1e-5)
    assert torch.allclose(distillation_loss(teacher.log(), teacher, 2.0), torch.zeros(4), atol=1e-5)


def test_virtual_teacher() -> None:
    teacher = virtual_teacher(torch.tensor([2, 0]), 5, 0.9)
    assert torch.allclose(teacher.sum(dim=1), torch.ones(2))
    assert teacher[0, 2] == pytest.approx(0.9) and teacher[0, 0] == pytest.approx(0.025)
    assert teacher[1].argmax() == 0


def test_label_smoothing_is_the_t1_case() -> None:
    """Yuan et al. sec. 3: with a = 1 - eps + eps / K and T = 1 the virtual-teacher term has the
    gradient of label-smoothed cross-entropy."""
    classes, epsilon = 6, 0.2
    task = DistillationTask(classes, temperature=1.0, alpha=1.0, teacher="virtual",
                            correct_probability=1 - epsilon + epsilon / classes)
    labels = torch.tensor([0, 3, 5])
    target = task.collate([int(label) for label in labels])
    logits = torch.randn(3, classes, requires_grad=True)
    task.loss(logits, target)["loss"].backward()
    ours = logits.grad.clone()
    logits.grad = None
    F.cross_entropy(logits, labels, label_smoothing=epsilon).backward()
    assert torch.allclose(ours, logits.grad, atol=1e-6)


def test_collate_formats() -> None:
    task = DistillationTask(3)
    soft = torch.tensor([0.2, 0.5, 0.3])
    batch = task.collate([soft, None, {"teacher": soft, "label": 2}, torch.tensor(1)])
    assert batch.present.tolist() == [True, False, True, True]
    assert batch.value["label"].tolist() == [NO_LABEL, NO_LABEL, 2, 1]
    assert torch.equal(batch.value["teacher"][3], torch.tensor([0.0, 1.0, 0.0]))
    with pytest.raises(ValueError):
        task.collate([torch.ones(4) / 4])


def test_alpha_mixes_soft_and_hard_terms() -> None:
    task = DistillationTask(3, temperature=2.0, alpha=0.25)
    teacher = F.softmax(torch.randn(3, 3), dim=1)
    batch = task.collate([{"teacher": teacher[0], "label": 1}, teacher[1],
                          {"teacher": teacher[2], "label": 0}])
    logits = torch.randn(3, 3)
    soft = distillation_loss(logits, teacher, 2.0).mean()
    hard = F.cross_entropy(logits[[0, 2]], torch.tensor([1, 0]))  # image 1 has no label
    losses = task.loss(logits, batch)
    assert torch.allclose(losses["loss"], 0.25 * soft + 0.75 * hard)
    empty = task.loss(logits, TaskBatch(torch.zeros(3, dtype=torch.bool), batch.value))
    assert float(empty["loss"]) == 0.0


def test_trains_a_head_to_follow_the_teacher() -> None:
    spec = FeatureSpec(c5_channels=16, fpn_channels=8)
    c5 = torch.randn(8, 16, 2, 2)
    features = Features((64, 64), OrderedDict(c5=c5), OrderedDict(p2=torch.zeros(8, 8, 16, 16)))
    teacher = F.softmax(torch.randn(8, 4) * 3, dim=1)
    task = DistillationTask(4, temperature=2.0, alpha=1.0)
    head = task.build_head(spec)
    batch = task.collate(list(teacher))
    optimizer = torch.optim.Adam(head.parameters(), lr=0.05)
    losses = []
    for _ in range(40):
        loss = task.loss(head(features, batch), batch)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.2 * losses[0]
    metric = task.metric()
    metric.update(head(features, batch), batch)
    assert metric.compute()["top1"] == 1.0
