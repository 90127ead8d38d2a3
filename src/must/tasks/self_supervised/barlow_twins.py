"""Barlow Twins, "Self-Supervised Learning via Redundancy Reduction" (Zbontar et al. 2021).

* views:  two augmentations of the image (:class:`~.two_views.TwoViewTask`).
* head:   projector of three linear layers, BN and ReLU after the first two (lightly's
          ``BarlowTwinsProjectionHead``, sec. 2).
* loss:   sec. 2 eq. 1-2: ``L = sum_i (1 - C_ii)^2 + lambda sum_i sum_{j != i} C_ij^2``, ``C`` the
          cross-correlation of the two views' embeddings, each normalized along the batch
          (lightly's ``BarlowTwinsLoss``, ``lambda = 5e-3``). Under DDP on the global batch
          (:func:`~.two_views.gathered_pair`), as the paper's implementation all-reduces ``C``.
"""

from __future__ import annotations

from typing import Any

from lightly.loss import BarlowTwinsLoss
from lightly.models.modules.heads import BarlowTwinsProjectionHead
from torch import Tensor, nn

from must.models.features import FeatureSpec
from must.tasks.self_supervised.base import FeaturesFn
from must.tasks.self_supervised.two_views import EmbeddingHead, TwoViewTask, gathered_pair


class BarlowTwinsTask(TwoViewTask):
    name = "barlow_twins"
    gathers = True

    def __init__(self, view_size: int = 64, projection_dim: int = 256, hidden_dim: int = 256,
                 redundancy_weight: float = 5e-3, gather: bool = True, color_strength: float = 0.5,
                 blur: bool = True, crop_scale: tuple[float, float] = (0.08, 1.0)) -> None:
        super().__init__(view_size, color_strength, blur, crop_scale)
        self.projection_dim, self.hidden_dim = projection_dim, hidden_dim
        self.gathers = gather
        self.criterion = BarlowTwinsLoss(lambda_param=redundancy_weight)

    def build_head(self, spec: FeatureSpec) -> EmbeddingHead:
        return EmbeddingHead(BarlowTwinsProjectionHead(spec.c5_channels, self.hidden_dim, self.projection_dim))

    def embed(self, head: nn.Module, features_fn: FeaturesFn, first: Tensor, second: Tensor) -> dict[str, Tensor]:
        projection_first, projection_second = self.online(head, features_fn, first, second)
        return {"first": projection_first, "second": projection_second}

    def view_loss(self, output: dict[str, Tensor]) -> dict[str, Tensor]:
        """Barlow Twins eq. 1 on the global batch (zero below two images: no batch statistics)."""
        first, second = gathered_pair(output["first"].float(), output["second"].float(), self.gathers)
        if first.shape[0] < 2:
            return {"loss": (first.sum() + second.sum()) * 0.0}
        return {"loss": self.criterion(first, second)}

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "projection_dim": self.projection_dim}
