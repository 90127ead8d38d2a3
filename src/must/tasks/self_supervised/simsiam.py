"""SimSiam, "Exploring Simple Siamese Representation Learning" (Chen & He 2021).

* views:  two augmentations of the image (:class:`~.two_views.TwoViewTask`).
* head:   projection MLP ``f`` (3 layers, BN on each, lightly's ``SimSiamProjectionHead``) and
          prediction MLP ``h`` (bottleneck, lightly's ``SimSiamPredictionHead``), sec. 3.
* loss:   sec. 3 eq. 1-3: ``L = D(p1, stopgrad(z2)) / 2 + D(p2, stopgrad(z1)) / 2`` with
          ``D(p, z) = -cos(p, z)`` (lightly's ``NegativeCosineSimilarity``). No momentum encoder,
          no negatives: the stop-gradient prevents collapse (sec. 4).
"""

from __future__ import annotations

from typing import Any

from lightly.loss import NegativeCosineSimilarity
from lightly.models.modules.heads import SimSiamPredictionHead, SimSiamProjectionHead
from torch import Tensor, nn

from must.models.features import FeatureSpec
from must.tasks.self_supervised.base import FeaturesFn
from must.tasks.self_supervised.two_views import EmbeddingHead, TwoViewTask


class SimSiamTask(TwoViewTask):
    name = "simsiam"

    def __init__(self, view_size: int = 64, projection_dim: int = 256, hidden_dim: int = 256,
                 prediction_hidden_dim: int = 64, color_strength: float = 0.5, blur: bool = True,
                 crop_scale: tuple[float, float] = (0.08, 1.0)) -> None:
        super().__init__(view_size, color_strength, blur, crop_scale)
        self.projection_dim, self.hidden_dim = projection_dim, hidden_dim
        self.prediction_hidden_dim = prediction_hidden_dim
        self.criterion = NegativeCosineSimilarity()

    def build_head(self, spec: FeatureSpec) -> EmbeddingHead:
        return EmbeddingHead(SimSiamProjectionHead(spec.c5_channels, self.hidden_dim, self.projection_dim),
                             SimSiamPredictionHead(self.projection_dim, self.prediction_hidden_dim,
                                                   self.projection_dim))

    def embed(self, head: nn.Module, features_fn: FeaturesFn, first: Tensor, second: Tensor) -> dict[str, Tensor]:
        projection_first, projection_second = self.online(head, features_fn, first, second)
        return {"first": projection_first, "second": projection_second,
                "prediction_first": head.predict(projection_first),
                "prediction_second": head.predict(projection_second)}

    def view_loss(self, output: dict[str, Tensor]) -> dict[str, Tensor]:
        """SimSiam eq. 3: ``D(p1, stopgrad(z2)) / 2 + D(p2, stopgrad(z1)) / 2``."""
        loss = 0.5 * (self.criterion(output["prediction_first"].float(), output["second"].detach().float())
                      + self.criterion(output["prediction_second"].float(), output["first"].detach().float()))
        return {"loss": loss}

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "projection_dim": self.projection_dim}
