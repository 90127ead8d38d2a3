"""BYOL, Bootstrap Your Own Latent (Grill et al. 2020).

* views:  two augmentations of the image (:class:`~.two_views.TwoViewTask`).
* head:   online projection ``g_theta`` and predictor ``q_theta`` (lightly's ``BYOLProjectionHead``
          / ``BYOLPredictionHead``: linear, BN, ReLU, linear, sec. 3.3), and the target network
          ``f_xi, g_xi``, a momentum copy of backbone and projection (:mod:`.momentum`,
          ``tau_base = 0.996`` cosine to 1, sec. 3.2).
* loss:   sec. 3.1 eq. 2, symmetrized: ``||q_bar - z'_bar||^2 = 2 - 2 cos(q, z')`` for the first
          view's prediction against the second view's target projection and vice versa. Computed
          with lightly's ``NegativeCosineSimilarity`` as ``-(cos(q1, z'2) + cos(q2, z'1)) / 2``,
          i.e. the paper's ``L + L~`` is ``4 + 4 x`` this (same gradient up to a factor 4).
"""

from __future__ import annotations

from typing import Any

from lightly.loss import NegativeCosineSimilarity
from lightly.models.modules.heads import BYOLPredictionHead, BYOLProjectionHead
from torch import Tensor

from must.models.features import FeatureSpec
from must.tasks.self_supervised.momentum import MomentumHead
from must.tasks.self_supervised.two_views import MomentumPairTask


class BYOLTask(MomentumPairTask):
    name = "byol"

    def __init__(self, view_size: int = 64, projection_dim: int = 128, hidden_dim: int = 512,
                 base_momentum: float = 0.996, final_momentum: float = 1.0, color_strength: float = 0.5,
                 blur: bool = True, crop_scale: tuple[float, float] = (0.08, 1.0)) -> None:
        super().__init__(view_size, projection_dim, hidden_dim, base_momentum, final_momentum, color_strength,
                         blur, crop_scale)
        self.criterion = NegativeCosineSimilarity()

    def build_head(self, spec: FeatureSpec) -> MomentumHead:
        return MomentumHead(BYOLProjectionHead(spec.c5_channels, self.hidden_dim, self.projection_dim),
                            BYOLPredictionHead(self.projection_dim, self.hidden_dim, self.projection_dim),
                            self.base_momentum, self.final_momentum)

    def view_loss(self, output: dict[str, Tensor]) -> dict[str, Tensor]:
        """``-(cos(q1, z'2) + cos(q2, z'1)) / 2`` (BYOL eq. 2, symmetrized; see the module docstring)."""
        loss = 0.5 * (self.criterion(output["prediction_first"].float(), output["target_second"].float())
                      + self.criterion(output["prediction_second"].float(), output["target_first"].float()))
        return {"loss": loss}

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "projection_dim": self.projection_dim, "base_momentum": self.base_momentum}
