"""SoftMatch (Chen et al. 2023, "SoftMatch: Addressing the Quantity-Quality Trade-off in
Semi-supervised Learning"), for classification and per pixel for segmentation.

Instead of a hard mask, each pseudo label is weighted by a truncated Gaussian of its confidence
(sec. 3.2, eq. 7), whose mean and variance are moving averages of the batch's confidence (eq. 8)::

    lambda(p) = exp(-(max p - mu_t)^2 / (2 sigma_t^2))   if max p < mu_t,   else 1
    mu_t      = m * mu_{t-1} + (1 - m) * mean_b max p_b                       mu_0 = 1/C
    sigma_t^2 = m * sigma_{t-1}^2 + (1 - m) * N/(N-1) * var_b max p_b         sigma_0^2 = 1

(lambda_max is the task's ``weight``). Uniform alignment (sec. 3.3, eq. 10) first divides the
prediction by the moving average of its mean and renormalizes, ``UA(p) = Normalize(p * u(C) /
E[p])``, so that the pseudo labels of every class get weight. The moving averages (``m`` = 0.999)
are the state, their batch values averaged over DDP ranks (two all-reduces per step: ``mu`` and
``sigma`` need the aligned confidence, hence the updated ``E[p]``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from must.errors import ConfigError
from must.tasks.base import Task
from must.tasks.self_supervised.semi import SemiSupervisedTask, update_averages


class SoftMatchTask(SemiSupervisedTask):
    """SoftMatch on a :class:`ClassificationTask` or :class:`SegmentationTask`."""

    method = "softmatch"

    def __init__(self, base: Task, momentum: float = 0.999, alignment: bool = True, weight: float = 1.0,
                 view_size: int = 64, num_ops: int = 2, cutout: bool = True) -> None:
        if not 0.0 <= momentum < 1.0:
            raise ConfigError(f"momentum must be in [0, 1), got {momentum}")
        super().__init__(base, weight, view_size, num_ops, cutout)
        self.momentum, self.alignment = momentum, alignment

    def initial_state(self, classes: int) -> dict[str, Tensor]:
        return {"mu": torch.tensor(1.0 / classes), "variance": torch.tensor(1.0),
                "p_model": torch.full((classes,), 1.0 / classes)}

    def aligned(self, probabilities: Tensor) -> Tensor:
        """Uniform alignment (eq. 10); the identity when ``alignment`` is off."""
        if not self.alignment:
            return probabilities
        scaled = probabilities / (self.state["p_model"] * probabilities.shape[1])
        return scaled / scaled.sum(dim=1, keepdim=True)

    def observe(self, probabilities: Tensor, output: dict[str, Tensor]) -> None:
        update_averages(self.state, {"p_model": probabilities.mean(dim=0)}, self.momentum)
        # The confidence is read after alignment by the updated p_model: a second all-reduce.
        confidence = self.aligned(probabilities).max(dim=1).values
        variance = confidence.var(unbiased=True) if confidence.numel() > 1 else confidence.new_zeros(())
        update_averages(self.state, {"mu": confidence.mean(), "variance": variance}, self.momentum)

    def rule(self, probabilities: Tensor) -> tuple[Tensor, Tensor]:
        """The arg max of the aligned prediction, weighted by eq. 7."""
        confidence, pseudo = self.aligned(probabilities).max(dim=1)
        below = (confidence - self.state["mu"]).clamp(max=0.0)
        return pseudo, torch.exp(-below.square() / (2.0 * self.state["variance"]))

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "momentum": self.momentum, "alignment": self.alignment}
