"""VICReg, "Variance-Invariance-Covariance Regularization for Self-Supervised Learning" (Bardes,
Ponce & LeCun 2022).

* views:  two augmentations of the image (:class:`~.two_views.TwoViewTask`).
* head:   expander of three linear layers, BN and ReLU after the first two (lightly's
          ``VICRegProjectionHead``, sec. 4.2).
* loss:   sec. 4.3 eq. 6: ``lambda s(Z, Z') + mu [v(Z) + v(Z')] + nu [c(Z) + c(Z')]``: invariance
          (mean squared distance), variance (hinge on each dimension's standard deviation, eq. 1),
          covariance (squared off-diagonal covariances / d, eq. 4); ``lambda = mu = 25``, ``nu = 1``
          (lightly's ``VICRegLoss``, whose variance term averages the two views). Under DDP on the
          global batch (:func:`~.two_views.gathered_pair`).
"""

from __future__ import annotations

from typing import Any

from lightly.loss import VICRegLoss
from lightly.models.modules.heads import VICRegProjectionHead
from torch import Tensor, nn

from must.models.features import FeatureSpec
from must.tasks.self_supervised.base import FeaturesFn
from must.tasks.self_supervised.two_views import EmbeddingHead, TwoViewTask, gathered_pair


class VICRegTask(TwoViewTask):
    name = "vicreg"
    gathers = True

    def __init__(self, view_size: int = 64, projection_dim: int = 256, hidden_dim: int = 256,
                 invariance_weight: float = 25.0, variance_weight: float = 25.0,
                 covariance_weight: float = 1.0, gather: bool = True, color_strength: float = 0.5,
                 blur: bool = True, crop_scale: tuple[float, float] = (0.08, 1.0)) -> None:
        super().__init__(view_size, color_strength, blur, crop_scale)
        self.projection_dim, self.hidden_dim = projection_dim, hidden_dim
        self.gathers = gather
        self.criterion = VICRegLoss(lambda_param=invariance_weight, mu_param=variance_weight,
                                    nu_param=covariance_weight)

    def build_head(self, spec: FeatureSpec) -> EmbeddingHead:
        return EmbeddingHead(VICRegProjectionHead(spec.c5_channels, self.hidden_dim, self.projection_dim))

    def embed(self, head: nn.Module, features_fn: FeaturesFn, first: Tensor, second: Tensor) -> dict[str, Tensor]:
        projection_first, projection_second = self.online(head, features_fn, first, second)
        return {"first": projection_first, "second": projection_second}

    def view_loss(self, output: dict[str, Tensor]) -> dict[str, Tensor]:
        """VICReg eq. 6 on the global batch (zero below two images: no variance to measure)."""
        first, second = gathered_pair(output["first"].float(), output["second"].float(), self.gathers)
        if first.shape[0] < 2:
            return {"loss": (first.sum() + second.sum()) * 0.0}
        return {"loss": self.criterion(first, second)}

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "projection_dim": self.projection_dim}
