"""FixMatch (Sohn et al. 2020, "FixMatch: Simplifying Semi-Supervised Learning with Consistency
and Confidence"), for classification and for semantic segmentation.

On an unlabeled image the model's prediction on a *weakly* augmented view becomes a pseudo label
where its confidence reaches ``threshold`` (tau = 0.95), and the model is trained to predict it on a
*strongly* augmented view (sec. 2.2, eq. 4)::

    l_u = lambda_u * 1/(mu B) * sum_b 1(max q_b >= tau) * H(argmax q_b, p_model(y | A(u_b)))

with ``q_b`` the (gradient-free) prediction on the weak view ``alpha(u_b)``; the mean runs over all
unlabeled images (or pixels), kept or not. The supervised term on labeled images is the wrapped
task's own loss on its own targets, in the same multi-task run. Views, head and metric are those of
:mod:`.semi`, which every semi-supervised method shares.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from must.errors import ConfigError
from must.tasks.base import Task
from must.tasks.self_supervised.semi import SemiSupervisedTask, cutout, weak_transform

__all__ = ["FixMatchTask", "cutout", "weak_transform"]


class FixMatchTask(SemiSupervisedTask):
    """FixMatch on ``base`` (a :class:`ClassificationTask` or :class:`SegmentationTask`)."""

    method = "fixmatch"

    def __init__(self, base: Task, threshold: float = 0.95, weight: float = 1.0, view_size: int = 64,
                 num_ops: int = 2, cutout: bool = True) -> None:
        if not 0.0 <= threshold <= 1.0:
            raise ConfigError(f"threshold must be in [0, 1], got {threshold}")
        super().__init__(base, weight, view_size, num_ops, cutout)
        self.threshold = threshold

    def rule(self, probabilities: Tensor) -> tuple[Tensor, Tensor]:
        """FixMatch eq. 4: the arg max where ``max q >= tau``."""
        confidence, pseudo = probabilities.max(dim=1)
        return pseudo, (confidence >= self.threshold).float()

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "threshold": self.threshold}
