"""UDA (Xie et al. 2020, "Unsupervised Data Augmentation for Consistency Training"), for
classification and per pixel for segmentation.

The consistency loss (sec. 2.2, eq. 1) is the KL divergence between the gradient-free prediction on
the original (here: weakly augmented) image and the prediction on the strongly augmented one, with
the two refinements of sec. 3.2 ("Sharpening Predictions"): confidence-based masking, which keeps
only samples whose ``max q >= beta``, and prediction sharpening with a softmax temperature ``T``::

    l_u = 1/(mu B) * sum_b 1(max q_b >= beta) * KL(softmax(z_b / T) || p_model(y | A(u_b)))

with ``z_b`` the weak view's logits (``softmax(log q_b / T)`` is the same target); UDA uses
``beta = 0.8`` and ``T = 0.4`` on CIFAR-10.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from must.errors import ConfigError
from must.tasks.base import Task
from must.tasks.self_supervised.semi import SemiSupervisedTask


class UDATask(SemiSupervisedTask):
    """UDA on a :class:`ClassificationTask` or :class:`SegmentationTask`."""

    method = "uda"

    def __init__(self, base: Task, threshold: float = 0.8, temperature: float = 0.4, weight: float = 1.0,
                 view_size: int = 64, num_ops: int = 2, cutout: bool = True) -> None:
        if not 0.0 <= threshold <= 1.0:
            raise ConfigError(f"threshold must be in [0, 1], got {threshold}")
        if temperature <= 0:
            raise ConfigError(f"temperature must be positive, got {temperature}")
        super().__init__(base, weight, view_size, num_ops, cutout)
        self.threshold, self.temperature = threshold, temperature

    def rule(self, probabilities: Tensor) -> tuple[Tensor, Tensor]:
        """The sharpened prediction, kept where ``max q >= beta``."""
        sharpened = F.softmax(torch.log(probabilities.clamp_min(1e-30)) / self.temperature, dim=1)
        return sharpened, (probabilities.max(dim=1).values >= self.threshold).float()

    def consistency(self, strong: Tensor, target: Tensor) -> Tensor:
        """``KL(target || softmax(strong))`` per sample."""
        return F.kl_div(F.log_softmax(strong, dim=1), target, reduction="none").sum(dim=1)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "threshold": self.threshold, "temperature": self.temperature}
