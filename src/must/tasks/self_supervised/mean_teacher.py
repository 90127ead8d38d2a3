"""Mean Teacher (Tarvainen & Valpola 2017, "Mean teachers are better role models: Weight-averaged
consistency targets improve semi-supervised deep learning results"), for classification and per
pixel for segmentation.

The teacher is the exponential moving average of the student's weights (sec. 2)::

    theta'_t = alpha * theta'_{t-1} + (1 - alpha) * theta_t

and the consistency cost is the squared difference of the two models' class probabilities on two
noisy views of the same image, ``J = E || f(x, theta', eta') - f(x, theta, eta) ||^2`` (mean over
classes, as their implementation divides by the class count). The training engine's weight average
(``train.ema_decay`` = alpha, 0.99-0.999 in the paper) is the teacher: the engine hands it to the
task (:meth:`MeanTeacherTask.use_weight_average`), updates it after every optimizer step and saves it
in the checkpoint. The teacher sees the weak view in eval mode, without gradient; the student a
second weak view (classification; the paper's noise is flips and translations) or, for segmentation
where the views must stay aligned, the weak view with photometric noise.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from must.errors import ConfigError
from must.data.sample import TaskBatch
from must.tasks.self_supervised.base import FeaturesFn, present_views, to_unit
from must.tasks.self_supervised.semi import SemiSupervisedTask


class MeanTeacherTask(SemiSupervisedTask):
    """Mean Teacher on a :class:`ClassificationTask` or :class:`SegmentationTask`."""

    method = "mean_teacher"
    teacher: nn.Module | None = None

    def use_weight_average(self, model: nn.Module | None) -> None:
        """The teacher: the engine's average of the student's weights (a model with
        ``features_for`` and ``heads``), None when the run keeps none, which is refused."""
        if model is None:
            raise ConfigError(f"task '{self.name}' needs train.ema_decay (e.g. 0.999): its teacher is the "
                              "moving average of the student's weights (Tarvainen & Valpola 2017 sec. 2)")
        self.teacher = model

    def strong(self, image: Tensor) -> Tensor:
        """The student's noise: none beyond its own weak view (classification), photometric
        RandAugment without Cutout (segmentation)."""
        if not self.dense:
            return image
        use_cutout, self.use_cutout = self.use_cutout, False
        try:
            return super().strong(image)
        finally:
            self.use_cutout = use_cutout

    def forward_views(self, head: nn.Module, features_fn: FeaturesFn,
                      target: TaskBatch | None) -> dict[str, Tensor] | None:
        """``{"weak": the teacher's logits, "strong": the student's}``."""
        views = present_views(target)
        if views is None:
            return None
        if self.teacher is None:
            raise ConfigError(f"task '{self.name}' has no teacher: the engine gives it the weight "
                              "average of train.ema_decay")
        return {"weak": self.teacher_logits(to_unit(views["weak"])),
                "strong": head(features_fn(to_unit(views["strong"])), None)}

    def teacher_logits(self, images: Tensor) -> Tensor:
        teacher = self.teacher
        assert teacher is not None
        was_training = teacher.training
        teacher.eval()
        try:
            with torch.no_grad():
                # The trunk as the student's view pass runs it (no FPN unless the head reads it).
                return teacher.heads[self.head_name](teacher.features_for(self.name)(images), None).detach()
        finally:
            teacher.train(was_training)

    def rule(self, probabilities: Tensor) -> tuple[Tensor, Tensor]:
        """The teacher's probabilities, every sample with weight 1."""
        return probabilities, torch.ones(probabilities.shape[0], device=probabilities.device)

    def consistency(self, strong: Tensor, target: Tensor) -> Tensor:
        """Squared error of the probabilities, mean over classes."""
        return (F.softmax(strong, dim=1) - target).square().mean(dim=1)
