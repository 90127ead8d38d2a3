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

from lightly.loss import BarlowTwinsLoss
from lightly.models.modules.heads import BarlowTwinsProjectionHead

from must.tasks.self_supervised.two_views import BatchStatisticsTask


class BarlowTwinsTask(BatchStatisticsTask):
    name = "barlow_twins"
    projector = BarlowTwinsProjectionHead

    def __init__(self, view_size: int = 64, projection_dim: int = 256, hidden_dim: int = 256,
                 redundancy_weight: float = 5e-3, gather: bool = True, color_strength: float = 0.5,
                 blur: bool = True, crop_scale: tuple[float, float] = (0.08, 1.0)) -> None:
        super().__init__(view_size, projection_dim, hidden_dim, gather, color_strength, blur, crop_scale)
        self.criterion = BarlowTwinsLoss(lambda_param=redundancy_weight)
