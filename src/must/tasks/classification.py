"""Image classification (MuST sec. 3.3 head, sec. 3.2 soft pseudo labels, Hinton et al. 2015
distillation, Noisy Student dropout).

* head:         global average pool of C5 + linear (:class:`~must.models.heads.ClassificationHead`);
                with ``background_class`` one extra output, the paper's CIFAR-100 transfer head
                (supplementary: "a randomly initialized linear layer that predicts 101 classes,
                including background"), which no target ever names.
* loss:         soft-target cross-entropy ``-sum_k p_k log softmax(z / T)_k`` times ``T^2``;
                hard labels are one-hot ``p``; optional label smoothing; absent images skipped.
* pseudo label: the teacher's full probability vector (sec. 3.2), optionally only its ``top_k``
                largest entries, renormalized (a sparse form for large class counts).
* metric:       top-1 and top-5 accuracy (torchmetrics) against the target's argmax.
* draw:         the class name and its probability written on the image.
* geometry:     an image label survives every scale, crop and flip unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor, nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from must.data.geometry import Geometry
from must.data.sample import TaskBatch
from must.errors import ConfigError
from must.models.features import FeatureSpec
from must.models.heads import ClassificationHead
from must.tasks.base import Task


def soften(probabilities: Tensor, temperature: float) -> Tensor:
    """The teacher's distribution at temperature ``T`` from its ``T = 1`` probabilities:
    ``softmax(log p / T) = p^(1/T) / sum p^(1/T)`` (exact, since softmax ignores the shift
    between logits and log-probabilities). One-hot and zero entries stay as they are."""
    if temperature == 1.0:
        return probabilities
    powered = probabilities.clamp_min(0).pow(1.0 / temperature)
    return powered / powered.sum(dim=-1, keepdim=True).clamp_min(torch.finfo(powered.dtype).tiny)


def soft_target_kl(logits: Tensor, probabilities: Tensor, temperature: float = 1.0,
                   label_smoothing: float = 0.0) -> Tensor:
    """Per-image ``T^2 * KL(q || softmax(z / T)) = T^2 * sum_k q_k (log q_k - log softmax(z / T)_k)``
    (Hinton et al. 2015, sec. 2: the ``T^2`` keeps gradient magnitudes independent of ``T``), where
    ``q`` is ``p`` at temperature ``T`` mixed with the uniform distribution over ``p``'s classes
    (label smoothing, Szegedy et al. 2016).

    This is the soft cross-entropy minus the target's entropy: the same gradient, and zero when the
    prediction matches the target. For a one-hot target without smoothing the two are equal. A soft
    pseudo label (MuST sec. 3.2) has entropy, so its cross-entropy never falls below it; weightings
    that read loss values (uncertainty, DWA, GradNorm, FAMO: they divide by the loss or compare its
    rates) would take that floor for a task that does not learn and turn its weight down.

    ``logits`` may have more columns than ``probabilities`` (the background class): the extra
    columns get target zero, smoothing included.
    """
    target = soften(probabilities.float(), temperature)
    if label_smoothing > 0:
        target = (1 - label_smoothing) * target + label_smoothing / target.shape[-1]
    extra = logits.shape[-1] - target.shape[-1]
    if extra > 0:
        target = F.pad(target, (0, extra))
    log_probabilities = F.log_softmax(logits.float() / temperature, dim=-1)
    divergence = (torch.xlogy(target, target) - target * log_probabilities).sum(dim=-1) * temperature**2
    # At the target the sum rounds to about -1e-7 in float32: the value is clamped at 0 (weightings
    # divide by it or take its logarithm), the gradient is the unclamped one.
    return divergence + (divergence.clamp_min(0.0) - divergence).detach()


class ClassificationMetric:
    """Top-1 and top-5 accuracy (torchmetrics, micro average) of the logits against the argmax of
    the target probabilities, over images that have a target. DDP-synced by torchmetrics."""

    def __init__(self, num_outputs: int) -> None:
        self.metrics = MetricCollection({
            "top1": MulticlassAccuracy(num_outputs, top_k=1, average="micro"),
            "top5": MulticlassAccuracy(num_outputs, top_k=min(5, num_outputs), average="micro"),
        })

    def update(self, output: Tensor, target: TaskBatch) -> None:
        """``output``: the head's logits ``[B, K(+1)]``; ``target``: collated probabilities."""
        self.metrics.to(output.device)  # even with no target: DDP syncs states from every rank
        if target.count == 0:
            return
        present = target.present.to(output.device)
        labels = target.value.to(output.device)[present].argmax(dim=-1)
        self.metrics.update(output.detach()[present].float(), labels)

    def compute(self) -> dict[str, float]:
        return {name: float(value) for name, value in self.metrics.compute().items()}

    def reset(self) -> None:
        self.metrics.reset()


class ClassificationTask(Task):
    """One label per image out of ``num_classes`` (see the module docstring)."""

    name = "classification"
    primary_metric = "top1"

    def __init__(self, num_classes: int, class_names: Sequence[str] | None = None, *,
                 temperature: float = 1.0, label_smoothing: float = 0.0,
                 background_class: bool = False, dropout: float = 0.0,
                 top_k: int | None = None) -> None:
        if num_classes < 1:
            raise ConfigError(f"num_classes must be positive, got {num_classes}")
        if class_names is not None and len(class_names) != num_classes:
            raise ConfigError(f"{len(class_names)} class names for {num_classes} classes")
        if temperature <= 0:
            raise ConfigError(f"temperature must be positive, got {temperature}")
        if not 0 <= label_smoothing < 1:
            raise ConfigError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        if top_k is not None and not 1 <= top_k <= num_classes:
            raise ConfigError(f"top_k must be in [1, {num_classes}], got {top_k}")
        self.num_classes = num_classes
        self.class_names = list(class_names) if class_names is not None else None
        self.temperature = temperature
        self.label_smoothing = label_smoothing
        self.background_class = background_class
        self.dropout = dropout
        self.top_k = top_k

    @property
    def num_outputs(self) -> int:
        return self.num_classes + int(self.background_class)

    def build_head(self, spec: FeatureSpec) -> nn.Module:
        return ClassificationHead(spec.c5_channels, self.num_outputs, self.dropout)

    def loss(self, output: Tensor, target: TaskBatch) -> dict[str, Tensor]:
        """Mean :func:`soft_target_kl` over the images with a target; ``0 * logits.sum()`` when
        there are none, so every head parameter still takes part in the graph (DDP needs that)."""
        if target.count == 0:
            return {"loss": output.sum() * 0.0}
        present = target.present.to(output.device)
        per_image = soft_target_kl(output[present], target.value.to(output.device)[present],
                                       self.temperature, self.label_smoothing)
        return {"loss": per_image.mean()}

    def predict(self, output: Tensor) -> list[Tensor]:
        """Logits -> softmax probabilities ``float32 [K(+1)]`` per image (temperature 1)."""
        return list(F.softmax(output.detach().float(), dim=-1).unbind(0))

    def to_source_size(self, prediction: Tensor, geometry: Geometry) -> Tensor:
        """Class probabilities describe the whole image, whatever its size: unchanged."""
        return prediction

    def to_pseudo_label(self, prediction: Tensor, threshold: float | None = None) -> Tensor:
        """MuST sec. 3.2: the probability vector itself (``threshold`` is unused: soft labels keep
        every class). A background column is dropped and the rest renormalized, since targets
        name real classes only. With ``top_k``, all but the k largest entries are zeroed."""
        probabilities = prediction.detach().float()[: self.num_classes]
        if self.top_k is not None and self.top_k < self.num_classes:
            kept = probabilities.topk(self.top_k)
            probabilities = torch.zeros_like(probabilities).scatter_(0, kept.indices, kept.values)
        return probabilities / probabilities.sum().clamp_min(torch.finfo(probabilities.dtype).tiny)

    def metric(self) -> ClassificationMetric:
        return ClassificationMetric(self.num_outputs)

    def class_name(self, index: int) -> str:
        if index >= self.num_classes:
            return "background"
        return self.class_names[index] if self.class_names is not None else str(index)

    def draw(self, image: np.ndarray, prediction: Tensor) -> np.ndarray:
        """Writes "<class name> <probability>" of the top class in the top-left corner."""
        probabilities = prediction.detach().float().cpu()
        index = int(probabilities.argmax())
        text = f"{self.class_name(index)} {float(probabilities[index]):.2f}"
        canvas = Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8))
        painter = ImageDraw.Draw(canvas)
        font = ImageFont.load_default(size=max(8, canvas.height // 16))
        left, top, right, bottom = painter.textbbox((2, 2), text, font=font)
        # white on a black box: readable on any image
        painter.rectangle((0, 0, right + 2, bottom + 2), fill=(0, 0, 0))
        painter.text((2, 2), text, fill=(255, 255, 255), font=font)
        return np.asarray(canvas, dtype=np.uint8).copy()

    def transform_target(self, target: Tensor, geometry: Geometry) -> Tensor:
        """Image-level labels do not move with pixels: unchanged under any geometry."""
        return target

    def collate(self, targets: list[Tensor | int | None]) -> TaskBatch:
        """Hard labels (``int64`` 0-d) become one-hot, soft ones (``float32 [K]``) stay: the value is
        ``float32 [B, K]`` probabilities; absent rows are zeros, never read by loss or metric."""
        rows = [self._probabilities(target) for target in targets]
        present = torch.tensor([row is not None for row in rows], dtype=torch.bool)
        zeros = torch.zeros(self.num_classes)
        return TaskBatch(present, torch.stack([row if row is not None else zeros for row in rows]))

    def _probabilities(self, target: Tensor | int | None) -> Tensor | None:
        if target is None:
            return None
        target = torch.as_tensor(target)
        if target.dim() == 0 and not target.is_floating_point():
            label = int(target)
            if not 0 <= label < self.num_classes:
                raise ConfigError(f"classification label {label} outside [0, {self.num_classes}): the data "
                                  f"has more classes than the option num_classes={self.num_classes}")
            return F.one_hot(target.long(), self.num_classes).float()
        if target.shape != (self.num_classes,):
            raise ConfigError(f"soft classification target of shape {tuple(target.shape)}; expected "
                              f"({self.num_classes},): pseudo labels of another class count than the "
                              f"option num_classes={self.num_classes}")
        return target.float()

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "num_classes": self.num_classes, "class_names": self.class_names,
                "background_class": self.background_class}
