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

from lightly.loss import VICRegLoss
from lightly.models.modules.heads import VICRegProjectionHead

from must.tasks.self_supervised.two_views import BatchStatisticsTask


class VICRegTask(BatchStatisticsTask):
    name = "vicreg"
    projector = VICRegProjectionHead

    def __init__(self, view_size: int = 64, projection_dim: int = 256, hidden_dim: int = 256,
                 invariance_weight: float = 25.0, variance_weight: float = 25.0,
                 covariance_weight: float = 1.0, gather: bool = True, color_strength: float = 0.5,
                 blur: bool = True, crop_scale: tuple[float, float] = (0.08, 1.0)) -> None:
        super().__init__(view_size, projection_dim, hidden_dim, gather, color_strength, blur, crop_scale)
        self.criterion = VICRegLoss(lambda_param=invariance_weight, mu_param=variance_weight,
                                    nu_param=covariance_weight)
