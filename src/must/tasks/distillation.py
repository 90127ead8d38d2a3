"""Knowledge distillation as a task: Hinton et al. 2015 soft targets with temperature,
and teacher-free distillation / label smoothing (Yuan et al. 2020, "Revisiting Knowledge
Distillation via Label Smoothing Regularization").

* target:  per image, the teacher's probabilities ``float32 [K]`` (a classification pseudo label,
           MuST sec. 3.2), optionally with the ground-truth label: ``{"teacher": [K], "label": int}``;
           or, with ``teacher="virtual"``, the ground-truth label alone (``int64`` 0-d).
* loss:    ``alpha * T^2 * KL(p_T || softmax(z / T)) + (1 - alpha) * CE(y, softmax(z))``
           (Hinton et al. sec. 2: "multiply [the soft term] by T^2" so its gradients keep their
           size as ``T`` changes; the hard term only on images with a label). ``p_T`` is the
           teacher at temperature ``T``, computed exactly from its ``T = 1`` probabilities
           (:func:`must.tasks.classification.soften`).
* virtual teacher (Tf-KD_reg, Yuan et al. sec. 5, eq. 9): ``p(k) = a`` for the true class and
           ``(1 - a) / (K - 1)`` elsewhere; with ``T = 1`` the soft term is label smoothing
           (``a = 1 - eps + eps / K``) up to a constant. Yuan et al.'s code softens ``p`` by
           ``softmax(p / T)``; here it is softened like a real teacher's probabilities
           (``p^(1/T)`` normalized), so both teachers mean the same thing at the same ``T``.
* head, prediction, pseudo label, drawing: those of :class:`ClassificationTask` (pooled C5 +
  linear); the metric is top-1 / top-5 agreement with the teacher (the true label for the virtual
  teacher).

The classification task's own soft-target loss (``classification.soft_target_kl``, the same KL)
already trains on soft pseudo labels at a temperature; this task adds the hard-label mixture and
the virtual teacher.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from must.data.sample import TaskBatch
from must.errors import ConfigError
from must.tasks.classification import ClassificationMetric, ClassificationTask, soft_target_kl

NO_LABEL = -1
"""``label`` of images that have teacher probabilities but no ground truth."""


def distillation_loss(logits: Tensor, teacher_probabilities: Tensor, temperature: float) -> Tensor:
    """Per image ``T^2 * KL(soften(p, T) || softmax(z / T))`` (Hinton et al. 2015, sec. 2): the
    classification task's soft-target loss without smoothing."""
    return soft_target_kl(logits, teacher_probabilities, temperature)


def virtual_teacher(labels: Tensor, num_classes: int, correct_probability: float) -> Tensor:
    """Yuan et al. 2020 eq. 9's hand-made teacher: ``a`` on the true class, the rest spread evenly."""
    if num_classes < 2:
        raise ConfigError("a virtual teacher needs at least two classes")
    rest = (1.0 - correct_probability) / (num_classes - 1)
    probabilities = torch.full((labels.shape[0], num_classes), rest, device=labels.device)
    return probabilities.scatter_(1, labels.long()[:, None], correct_probability)


class DistillationMetric(ClassificationMetric):
    """Top-1 / top-5 agreement of the student with the teacher's argmax."""

    def update(self, output: Tensor, target: TaskBatch) -> None:
        super().update(output, TaskBatch(target.present, target.value["teacher"]))


class DistillationTask(ClassificationTask):
    name = "distillation"

    def __init__(self, num_classes: int, class_names: list[str] | None = None, *, temperature: float = 4.0,
                 alpha: float = 0.9, teacher: Literal["soft_labels", "virtual"] = "soft_labels",
                 correct_probability: float = 0.9, dropout: float = 0.0) -> None:
        super().__init__(num_classes, class_names, temperature=temperature, dropout=dropout)
        if not 0.0 <= alpha <= 1.0:
            raise ConfigError(f"alpha must be in [0, 1], got {alpha}")
        if teacher not in ("soft_labels", "virtual"):
            raise ConfigError(f"teacher must be 'soft_labels' or 'virtual', got '{teacher}'")
        if not 1.0 / num_classes <= correct_probability <= 1.0:
            raise ConfigError(f"correct_probability must be in [1/K, 1], got {correct_probability}")
        self.alpha = alpha
        self.teacher = teacher
        self.correct_probability = correct_probability

    def loss(self, output: Tensor, target: TaskBatch) -> dict[str, Tensor]:
        if target.count == 0:
            return {"loss": output.sum() * 0.0}
        present = target.present.to(output.device)
        logits = output[present]
        teacher = target.value["teacher"].to(output.device)[present]
        labels = target.value["label"].to(output.device)[present]
        soft = distillation_loss(logits, teacher, self.temperature).mean()
        labeled = labels != NO_LABEL
        if bool(labeled.any()):
            hard = F.cross_entropy(logits[labeled].float(), labels[labeled])
        else:
            hard = soft * 0.0
        return {"loss": self.alpha * soft + (1 - self.alpha) * hard,
                "soft": soft.detach(), "hard": hard.detach()}

    def metric(self) -> DistillationMetric:
        return DistillationMetric(self.num_outputs)

    def collate(self, targets: list[Any]) -> TaskBatch:
        """``{"teacher": float32 [B, K], "label": int64 [B]}`` (``NO_LABEL`` where there is none);
        absent rows are zeros / ``NO_LABEL``, never read."""
        rows = [self._parse(target) for target in targets]
        present = torch.tensor([row is not None for row in rows], dtype=torch.bool)
        teacher = torch.stack([row[0] if row is not None else torch.zeros(self.num_classes) for row in rows])
        labels = torch.tensor([row[1] if row is not None else NO_LABEL for row in rows], dtype=torch.int64)
        return TaskBatch(present, {"teacher": teacher, "label": labels})

    def _parse(self, target: Any) -> tuple[Tensor, int] | None:
        """One image's target -> (teacher probabilities, label or ``NO_LABEL``)."""
        if target is None:
            return None
        if self.teacher == "virtual":
            label = int(torch.as_tensor(target))
            if not 0 <= label < self.num_classes:
                raise ValueError(f"label {label} outside [0, {self.num_classes})")
            teacher = virtual_teacher(torch.tensor([label]), self.num_classes, self.correct_probability)
            return teacher[0], label
        if isinstance(target, dict):
            label = target.get("label")
            return self._probabilities(target["teacher"]), NO_LABEL if label is None else int(label)
        value = torch.as_tensor(target)
        hard = value.dim() == 0 and not value.is_floating_point()  # a label: its one-hot teaches
        return self._probabilities(value), int(value) if hard else NO_LABEL

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "temperature": self.temperature, "alpha": self.alpha,
                "teacher": self.teacher}
