"""FlexMatch (Zhang et al. 2021, "FlexMatch: Boosting Semi-Supervised Learning with Curriculum
Pseudo Labeling"), for classification.

Curriculum pseudo labeling (sec. 3.2) replaces FixMatch's fixed threshold by one per class, scaled
by how well the model has learned that class so far. The learning effect of class ``c`` is the
number of unlabeled images whose latest prediction is ``c`` with confidence above ``tau``::

    sigma_t(c) = sum_n 1(max p_t(y|u_n) > tau) * 1(argmax p_t(y|u_n) = c)
    beta_t(c)  = sigma_t(c) / max(max_c' sigma_t(c'), N - sum_c' sigma_t(c'))   (threshold warm-up)
    T_t(c)     = M(beta_t(c)) * tau,   M(x) = x / (2 - x)                        (convex mapping)

Without warm-up the denominator is ``max_c' sigma_t(c')``; with ``mapping="linear"`` M(x) = x. An
image's pseudo label is kept where ``max q >= T_t(argmax q)``; the loss is FixMatch's. The latest
prediction of every image (``-1`` = never confident) is the state: one entry per training image, so
the views carry the image's index, and per-pixel thresholds are not defined (classification only).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor

from must.losses.gather import gather_rows
from must.errors import ConfigError
from must.tasks.base import Task
from must.tasks.self_supervised.semi import SemiSupervisedTask


class FlexMatchTask(SemiSupervisedTask):
    """FlexMatch on a :class:`ClassificationTask`."""

    method = "flexmatch"
    dense_ok = False
    uses_index = True

    def __init__(self, base: Task, threshold: float = 0.95, warmup: bool = True,
                 mapping: Literal["convex", "linear"] = "convex", weight: float = 1.0, view_size: int = 64,
                 num_ops: int = 2, cutout: bool = True) -> None:
        if not 0.0 <= threshold <= 1.0:
            raise ConfigError(f"threshold must be in [0, 1], got {threshold}")
        if mapping not in ("convex", "linear"):
            raise ConfigError(f"mapping must be 'convex' or 'linear', got {mapping!r}")
        super().__init__(base, weight, view_size, num_ops, cutout)
        self.threshold, self.warmup, self.mapping = threshold, warmup, mapping

    def check_dataset_size(self, count: int) -> None:
        """One memory slot per training image (kept when resuming with the same images)."""
        if "selected" not in self.state or self.state["selected"].numel() != count:
            self.state["selected"] = torch.full((count,), -1, dtype=torch.long)

    def initial_state(self, classes: int) -> dict[str, Tensor]:
        return {"selected": torch.full((0,), -1, dtype=torch.long)}

    def observe(self, probabilities: Tensor, output: dict[str, Tensor]) -> None:
        """Stores the prediction of each image of the batch (every rank's) that beats ``tau``."""
        if "index" not in output:
            return
        confidence, label = probabilities.max(dim=1)
        rows, _ = gather_rows(torch.stack([output["index"].to(label.device), label,
                                           (confidence > self.threshold).long()], dim=1))
        confident = rows[rows[:, 2] == 1]
        self.state["selected"][confident[:, 0]] = confident[:, 1]

    def class_thresholds(self, classes: int) -> Tensor:
        """``T_t(c)`` for every class (FlexMatch sec. 3.2, see the module docstring)."""
        selected = self.state["selected"]
        sigma = torch.bincount(selected[selected >= 0], minlength=classes).float()
        denominator = sigma.max()
        if self.warmup:
            denominator = torch.maximum(denominator, (selected < 0).sum().float())
        beta = sigma / denominator if float(denominator) > 0 else torch.zeros_like(sigma)
        mapped = beta / (2.0 - beta) if self.mapping == "convex" else beta
        return mapped * self.threshold

    def rule(self, probabilities: Tensor) -> tuple[Tensor, Tensor]:
        confidence, pseudo = probabilities.max(dim=1)
        return pseudo, (confidence >= self.class_thresholds(probabilities.shape[1])[pseudo]).float()

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "threshold": self.threshold, "warmup": self.warmup,
                "mapping": self.mapping}
