"""MoCo v3 (Chen, Xie & He 2021, "An Empirical Study of Training Self-Supervised Vision
Transformers"), with our ResNet-FPN trunk.

* views:  two augmentations of the image (:class:`~.two_views.TwoViewTask`).
* head:   projection (3 layers) and prediction (2 layers) MLPs with BN on every layer (sec. 3,
          lightly's ``MoCoProjectionHead(batch_norm=True)``); the momentum encoder, a copy of
          backbone and projection (:mod:`.momentum`, ``m = 0.99`` cosine to 1, sec. 4).
* loss:   ``ctr(q1, k2) + ctr(q2, k1)``, the other keys of the batch as negatives (Algorithm 1,
          :func:`must.losses.moco.moco_v3_loss`); under DDP over the global batch
          (:func:`~.two_views.gathered_pair`: the paper gathers the keys of every GPU).
"""

from __future__ import annotations

from typing import Any

import torch
from lightly.models.modules.heads import MoCoProjectionHead
from torch import Tensor

from must.errors import ConfigError
from must.losses.moco import moco_v3_loss
from must.models.features import FeatureSpec
from must.tasks.self_supervised.momentum import MomentumHead
from must.tasks.self_supervised.two_views import MomentumPairTask, gathered_pair


class MoCoV3Task(MomentumPairTask):
    """Queries are the online predictions, keys the momentum target's projections."""

    name = "mocov3"
    gathers = True

    def __init__(self, view_size: int = 64, projection_dim: int = 128, hidden_dim: int = 512,
                 temperature: float = 0.2, base_momentum: float = 0.99, final_momentum: float = 1.0,
                 gather: bool = True, color_strength: float = 0.5, blur: bool = True,
                 crop_scale: tuple[float, float] = (0.08, 1.0)) -> None:
        super().__init__(view_size, projection_dim, hidden_dim, base_momentum, final_momentum, color_strength,
                         blur, crop_scale)
        if temperature <= 0:
            raise ConfigError(f"temperature must be positive, got {temperature}")
        self.temperature = temperature
        self.gathers = gather

    def build_head(self, spec: FeatureSpec) -> MomentumHead:
        projection = MoCoProjectionHead(spec.c5_channels, self.hidden_dim, self.projection_dim,
                                        num_layers=3, batch_norm=True)
        prediction = MoCoProjectionHead(self.projection_dim, self.hidden_dim, self.projection_dim,
                                        num_layers=2, batch_norm=True)
        return MomentumHead(projection, prediction, self.base_momentum, self.final_momentum)

    def empty_output(self, device: torch.device) -> dict[str, Tensor]:
        empty = super().empty_output(device)["first"]
        return {name: empty for name in ("prediction_first", "prediction_second", "target_first", "target_second")}

    def view_loss(self, output: dict[str, Tensor]) -> dict[str, Tensor]:
        """MoCo v3 Algorithm 1 on the global batch."""
        query_first, query_second = gathered_pair(output["prediction_first"].float(),
                                                  output["prediction_second"].float(), self.gathers)
        key_first, key_second = gathered_pair(output["target_first"].float(), output["target_second"].float(),
                                              self.gathers)
        if query_first.shape[0] == 0:
            return {"loss": (query_first.sum() + query_second.sum()) * 0.0}
        return {"loss": moco_v3_loss(query_first, query_second, key_first, key_second, self.temperature)}

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "projection_dim": self.projection_dim, "temperature": self.temperature}
