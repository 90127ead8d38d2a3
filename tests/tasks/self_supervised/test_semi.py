"""The semi-supervised methods beside FixMatch: each rule (threshold, weight, target) against its
paper's equation on hand-made probabilities; Mean Teacher's teacher; the registry of wrapped names."""

import math
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from must.config import ConfigError
from must.tasks import build_tasks
from must.tasks.classification import ClassificationTask
from must.tasks.segmentation import SegmentationTask
from must.tasks.self_supervised import (
    FlexMatchTask,
    FreeMatchTask,
    MeanTeacherTask,
    SoftMatchTask,
    UDATask,
)
from must.tasks.self_supervised.freematch import fairness_loss


def probabilities(*rows: list[float]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32)


def test_flexmatch_class_thresholds_with_warmup() -> None:
    """sigma = (2, 1, 0), 3 images never confident: beta = sigma / max(2, 3) = (2/3, 1/3, 0);
    M(x) = x / (2 - x) gives (1/2, 1/5, 0); T = 0.9 M (FlexMatch sec. 3.2, warm-up and convex M)."""
    task = FlexMatchTask(ClassificationTask(3), threshold=0.9)
    task.check_dataset_size(6)
    task.state["selected"] = torch.tensor([0, 0, 1, -1, -1, -1])
    assert task.class_thresholds(3).tolist() == pytest.approx([0.45, 0.18, 0.0])
    _, kept = task.rule(probabilities([0.5, 0.3, 0.2], [0.44, 0.36, 0.2], [0.3, 0.4, 0.3], [0.3, 0.3, 0.4]))
    assert kept.tolist() == [1.0, 0.0, 1.0, 1.0]


def test_flexmatch_without_warmup_and_linear_mapping() -> None:
    selected = torch.tensor([0, 0, 1, -1, -1, -1])
    convex = FlexMatchTask(ClassificationTask(3), threshold=0.9, warmup=False)
    convex.check_dataset_size(6)
    convex.state["selected"] = selected  # beta = sigma / 2 = (1, 1/2, 0)
    assert convex.class_thresholds(3).tolist() == pytest.approx([0.9, 0.9 / 3, 0.0])
    linear = FlexMatchTask(ClassificationTask(3), threshold=0.9, warmup=False, mapping="linear")
    linear.check_dataset_size(6)
    linear.state["selected"] = selected
    assert linear.class_thresholds(3).tolist() == pytest.approx([0.9, 0.45, 0.0])


def test_flexmatch_learns_each_images_latest_confident_prediction() -> None:
    task = FlexMatchTask(ClassificationTask(2), threshold=0.9)
    task.check_dataset_size(4)
    weak = torch.log(probabilities([0.95, 0.05], [0.6, 0.4], [0.02, 0.98]))
    output = {"weak": weak, "strong": torch.zeros(3, 2, requires_grad=True), "index": torch.tensor([3, 0, 1])}
    task.view_loss(output)
    assert task.state["selected"].tolist() == [-1, 1, -1, 0]  # image 0 was not confident: unchanged
    task.check_dataset_size(4)  # the loader's call on resume keeps the memory
    assert task.state["selected"].tolist() == [-1, 1, -1, 0]
    with pytest.raises(ConfigError, match="classification"):
        FlexMatchTask(SegmentationTask(3))


def test_freematch_self_adaptive_thresholds() -> None:
    """FreeMatch eq. 5-7 with lambda = 0.5 from tau_0 = 1/2, p~_0 = h~_0 = (1/2, 1/2): the batch has
    mean confidence 0.8, mean prediction (0.6, 0.4) and arg max histogram (2/3, 1/3)."""
    task = FreeMatchTask(ClassificationTask(2), momentum=0.5)
    batch = probabilities([0.9, 0.1], [0.7, 0.3], [0.2, 0.8])
    task.view_loss({"weak": torch.log(batch), "strong": torch.zeros(3, 2, requires_grad=True)})
    assert float(task.state["tau"]) == pytest.approx(0.65)
    assert task.state["p_model"].tolist() == pytest.approx([0.55, 0.45])
    assert task.state["histogram"].tolist() == pytest.approx([7 / 12, 5 / 12])
    assert task.class_thresholds().tolist() == pytest.approx([0.65, 0.45 / 0.55 * 0.65])
    _, kept = task.rule(probabilities([0.6, 0.4], [0.66, 0.34], [0.45, 0.55], [0.5, 0.5]))
    assert kept.tolist() == [0.0, 1.0, 1.0, 0.0]


def test_freematch_fairness_term() -> None:
    """eq. 11 by hand: kept samples 0 and 2 predict classes 0 and 1 on the strong view."""
    strong = torch.tensor([[2.0, 0.0], [0.0, 3.0], [0.0, 1.0]])
    kept = torch.tensor([True, False, True])
    p_model, histogram = torch.tensor([0.7, 0.3]), torch.tensor([0.8, 0.2])
    target = [0.7 / 0.8, 0.3 / 0.2]
    target = [value / sum(target) for value in target]
    s0, s2 = F.softmax(strong[0], 0).tolist(), F.softmax(strong[2], 0).tolist()
    mean = [(s0[0] + s2[0]) / 2 / 0.5, (s0[1] + s2[1]) / 2 / 0.5]
    mean = [value / sum(mean) for value in mean]
    expected = sum(t * math.log(m) for t, m in zip(target, mean))
    assert float(fairness_loss(strong, kept, p_model, histogram)) == pytest.approx(expected, rel=1e-5)
    assert float(fairness_loss(strong, torch.zeros(3, dtype=torch.bool), p_model, histogram)) == 0.0


def test_softmatch_truncated_gaussian_weights() -> None:
    """SoftMatch eq. 7-8 with m = 0.5 from mu_0 = 1/2, sigma_0^2 = 1: confidences (0.9, 0.7, 0.8)
    have mean 0.8 and unbiased variance 0.01, so mu = 0.65 and sigma^2 = 0.505."""
    task = SoftMatchTask(ClassificationTask(2), momentum=0.5, alignment=False)
    batch = probabilities([0.9, 0.1], [0.3, 0.7], [0.8, 0.2])
    task.view_loss({"weak": torch.log(batch), "strong": torch.zeros(3, 2, requires_grad=True)})
    assert float(task.state["mu"]) == pytest.approx(0.65)
    assert float(task.state["variance"]) == pytest.approx(0.505)
    label, weight = task.rule(probabilities([0.9, 0.1], [0.6, 0.4], [0.45, 0.55]))
    assert label.tolist() == [0, 0, 1]
    assert weight.tolist() == pytest.approx([1.0, math.exp(-0.05 ** 2 / 1.01), math.exp(-0.1 ** 2 / 1.01)])


def test_softmatch_uniform_alignment() -> None:
    """eq. 10: p * u(C) / E[p], renormalized: (0.5, 0.5) under E[p] = (0.6, 0.4) -> (0.4, 0.6)."""
    task = SoftMatchTask(ClassificationTask(2))
    task.ensure_state(2, torch.device("cpu"))
    task.state["p_model"] = torch.tensor([0.6, 0.4])
    assert task.aligned(probabilities([0.5, 0.5])).tolist() == [pytest.approx([0.4, 0.6])]


def test_uda_sharpened_masked_kl() -> None:
    """UDA sec. 3.2: targets softmax(z / T), kept where max q >= beta; KL to the strong view."""
    task = UDATask(ClassificationTask(2), threshold=0.8, temperature=0.4)
    batch = probabilities([0.9, 0.1], [0.6, 0.4])
    target, kept = task.rule(batch)
    sharp = [0.9 ** 2.5, 0.1 ** 2.5]
    assert target[0].tolist() == pytest.approx([value / sum(sharp) for value in sharp])
    assert kept.tolist() == [1.0, 0.0]
    strong = torch.tensor([[0.5, 1.0], [2.0, 0.0]])
    loss = task.view_loss({"weak": torch.log(batch), "strong": strong})["loss"]
    q = F.softmax(strong[0], 0).tolist()
    t = target[0].tolist()
    expected = sum(a * math.log(a / b) for a, b in zip(t, q)) / 2  # the mean runs over both images
    assert float(loss) == pytest.approx(expected, rel=1e-5)


class IdentityHead(nn.Module):
    def forward(self, features: torch.Tensor, target: object) -> torch.Tensor:
        return features


class Teacher(nn.Module):
    """A model with ``features`` and ``heads`` whose prediction is fixed: logits (log 0.8, log 0.2)."""

    def __init__(self) -> None:
        super().__init__()
        self.heads = nn.ModuleDict({"classification": IdentityHead()})

    def features_for(self, name: str) -> Callable[[torch.Tensor], torch.Tensor]:
        return lambda images: torch.log(torch.tensor([0.8, 0.2])).expand(images.shape[0], 2)

    def forward(self, *args):  # pragma: no cover - never called
        raise AssertionError


def test_mean_teacher_consistency_against_the_teacher() -> None:
    """Tarvainen & Valpola sec. 2: J = mean over classes of (student - teacher probabilities)^2."""
    task = MeanTeacherTask(ClassificationTask(2), view_size=8)
    with pytest.raises(ConfigError, match="ema_decay"):
        task.use_weight_average(None)
    task.use_weight_average(Teacher())
    views = task.collate([task.make_views(torch.zeros(3, 8, 8, dtype=torch.uint8), torch.Generator().manual_seed(i))
                          for i in range(2)])
    student_logits = torch.tensor([[0.0, 0.0], [1.0, 0.0]], requires_grad=True)
    output = task.forward_views(IdentityHead(), lambda images: student_logits, views)
    assert torch.allclose(F.softmax(output["weak"], 1), torch.tensor([[0.8, 0.2]] * 2))
    student = F.softmax(student_logits.detach(), 1)
    expected = ((student - torch.tensor([0.8, 0.2])) ** 2).mean()
    loss = task.view_loss(output)["loss"]
    assert float(loss.detach()) == pytest.approx(float(expected))
    loss.backward()
    assert student_logits.grad is not None


def test_mean_teacher_runs_the_teacher_trunk_as_the_student_view_pass() -> None:
    """The weight-averaged teacher of a classifier (pooled C5) computes no pyramid, also in a
    student whose segmentation head makes its model run the FPN; its logits are the teacher
    model's own on the view."""
    import copy

    from must.models import ModelConfig, build_model

    tasks = build_tasks({"classification": {"num_classes": 3}, "segmentation": {"num_classes": 2},
                         "mean_teacher_classification": {"view_size": 32}})
    torch.manual_seed(0)
    student = build_model(ModelConfig(backbone="resnet18", width=0.125, fpn_channels=16), tasks)
    teacher = copy.deepcopy(student)
    task = tasks["mean_teacher_classification"]
    task.use_weight_average(teacher)
    calls: list[int] = []
    teacher.fpn.register_forward_hook(lambda module, inputs, output: calls.append(1))
    generator = torch.Generator().manual_seed(0)
    views = task.collate([task.make_views(torch.randint(0, 256, (3, 40, 40), dtype=torch.uint8, generator=generator),
                                          generator) for _ in range(2)])
    output = student(None, {task.name: views}, tasks=[task.name])[task.name]
    assert teacher.runs_fpn and calls == []
    weak = views.value["weak"].float() / 255
    with torch.no_grad():
        expected = teacher.eval().heads["classification"](teacher.features(weak), None)
    assert torch.allclose(output["weak"], expected)


@pytest.mark.parametrize("method", ["fixmatch", "flexmatch", "freematch", "softmatch", "uda", "mean_teacher"])
def test_wrapped_names_build_their_method(method: str) -> None:
    tasks = build_tasks({"classification": {"num_classes": 3}, f"{method}_classification": {"weight": 0.5}})
    task = tasks[f"{method}_classification"]
    assert task.head_name == "classification" and task.weight == 0.5 and task.base is tasks["classification"]


def test_flexmatch_on_segmentation_is_refused() -> None:
    with pytest.raises(ConfigError, match="flexmatch_segmentation"):
        build_tasks({"segmentation": {"num_classes": 3}, "flexmatch_segmentation": {}})


@pytest.mark.parametrize("task", [FreeMatchTask(SegmentationTask(3)), SoftMatchTask(SegmentationTask(3)),
                                  UDATask(SegmentationTask(3), threshold=0.0)], ids=lambda t: t.method)
def test_per_pixel_rules(task) -> None:
    """Pixels are the samples: the loss equals the rule applied to the flattened pixels."""
    weak, strong = torch.randn(2, 3, 4, 5) * 3, torch.randn(2, 3, 4, 5)
    losses = task.view_loss({"weak": weak, "strong": strong})
    pixels = F.softmax(weak, 1).movedim(1, -1).reshape(-1, 3)
    target, weight = task.rule(pixels)
    per_pixel = task.consistency(strong.movedim(1, -1).reshape(-1, 3), target)
    assert torch.allclose(losses["consistency"], (per_pixel * weight).mean())
    assert weight.shape == (40,)
