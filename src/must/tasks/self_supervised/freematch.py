"""FreeMatch (Wang et al. 2023, "FreeMatch: Self-adaptive Thresholding for Semi-supervised
Learning"), for classification and per pixel for segmentation.

Self-adaptive thresholding (sec. 3.2): a global threshold, the moving average of the confidence,
modulated per class by the moving average of the predicted distribution (eq. 5-7)::

    tau_t    = lam * tau_{t-1} + (1 - lam) * mean_b max q_b                 tau_0 = 1/C
    p~_t(c)  = lam * p~_{t-1}(c) + (1 - lam) * mean_b q_b(c)                p~_0 = 1/C
    tau_t(c) = p~_t(c) / max_c' p~_t(c') * tau_t

and an image's (pixel's) pseudo label is kept where ``max q_b >= tau_t(argmax q_b)`` (eq. 8). The
self-adaptive fairness term (sec. 3.3, eq. 9-11) keeps the pseudo labels from collapsing onto a few
classes: with ``h~_t`` the moving average of the histogram of ``argmax q_b`` and ``p-``, ``h-`` the
mean probability and the histogram of the strong view's predictions over the kept samples::

    L_f = -H(SumNorm(p~_t / h~_t), SumNorm(p- / h-)),   H(a, b) = -sum_c a_c log b_c

added with weight ``fairness`` (w_f of eq. 12). The moving averages (momentum ``lam`` = 0.999) are
the state, their batch values averaged over DDP ranks (one all-reduce per step).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from must.errors import ConfigError
from must.tasks.base import Task
from must.tasks.self_supervised.semi import SemiSupervisedTask, update_averages


def sum_norm(values: Tensor) -> Tensor:
    return values / values.sum()


def fairness_loss(strong: Tensor, kept: Tensor, p_model: Tensor, histogram: Tensor) -> Tensor:
    """FreeMatch eq. 11 on the strong-view logits ``strong [samples, C]`` of the ``kept`` samples;
    zero when none is kept."""
    if not bool(kept.any()):
        return strong.sum() * 0.0
    probabilities = F.softmax(strong[kept], dim=1)
    strong_histogram = sum_norm(torch.bincount(probabilities.argmax(dim=1), minlength=strong.shape[1]).float())
    # A class no kept sample predicts has an empty bin: its ratio is 0, not infinite.
    target = sum_norm(p_model * torch.nan_to_num(1.0 / histogram, posinf=0.0))
    mean = sum_norm(probabilities.mean(dim=0) * torch.nan_to_num(1.0 / strong_histogram, posinf=0.0))
    return (target * torch.log(mean + 1e-12)).sum()


class FreeMatchTask(SemiSupervisedTask):
    """FreeMatch on a :class:`ClassificationTask` or :class:`SegmentationTask`."""

    method = "freematch"

    def __init__(self, base: Task, momentum: float = 0.999, fairness: float = 0.01, weight: float = 1.0,
                 view_size: int = 64, num_ops: int = 2, cutout: bool = True) -> None:
        if not 0.0 <= momentum < 1.0:
            raise ConfigError(f"momentum must be in [0, 1), got {momentum}")
        super().__init__(base, weight, view_size, num_ops, cutout)
        self.momentum, self.fairness = momentum, fairness

    def initial_state(self, classes: int) -> dict[str, Tensor]:
        uniform = torch.full((classes,), 1.0 / classes)
        return {"tau": torch.tensor(1.0 / classes), "p_model": uniform, "histogram": uniform.clone()}

    def observe(self, probabilities: Tensor, output: dict[str, Tensor]) -> None:
        confidence, label = probabilities.max(dim=1)
        histogram = torch.bincount(label, minlength=probabilities.shape[1]).float() / label.numel()
        update_averages(self.state, {"tau": confidence.mean(), "p_model": probabilities.mean(dim=0),
                                     "histogram": histogram}, self.momentum)

    def class_thresholds(self) -> Tensor:
        """``tau_t(c)`` (eq. 7)."""
        p_model = self.state["p_model"]
        return p_model / p_model.max() * self.state["tau"]

    def rule(self, probabilities: Tensor) -> tuple[Tensor, Tensor]:
        confidence, pseudo = probabilities.max(dim=1)
        return pseudo, (confidence >= self.class_thresholds()[pseudo]).float()

    def extra_losses(self, strong: Tensor, target: Tensor, weight: Tensor) -> dict[str, Tensor]:
        fairness = fairness_loss(strong, weight > 0, self.state["p_model"], self.state["histogram"])
        return {"fairness": self.fairness * fairness}

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "momentum": self.momentum, "fairness": self.fairness}
