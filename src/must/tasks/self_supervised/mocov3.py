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
from torch import Tensor, nn

from must.errors import ConfigError
from must.losses.moco import moco_v3_loss
from must.models.features import FeatureSpec
from must.tasks.self_supervised.base import FeaturesFn
from must.tasks.self_supervised.momentum import MomentumHead, check_momentum
from must.tasks.self_supervised.two_views import TwoViewTask, gathered_pair


class MoCoV3Task(TwoViewTask):
    name = "mocov3"
    gathers = True

    def __init__(self, view_size: int = 64, projection_dim: int = 128, hidden_dim: int = 512,
                 temperature: float = 0.2, base_momentum: float = 0.99, final_momentum: float = 1.0,
                 gather: bool = True, color_strength: float = 0.5, blur: bool = True,
                 crop_scale: tuple[float, float] = (0.08, 1.0)) -> None:
        super().__init__(view_size, color_strength, blur, crop_scale)
        if temperature <= 0:
            raise ConfigError(f"temperature must be positive, got {temperature}")
        check_momentum(base_momentum, final_momentum)
        self.projection_dim, self.hidden_dim, self.temperature = projection_dim, hidden_dim, temperature
        self.base_momentum, self.final_momentum = base_momentum, final_momentum
        self.gathers = gather

    def build_head(self, spec: FeatureSpec) -> MomentumHead:
        projection = MoCoProjectionHead(spec.c5_channels, self.hidden_dim, self.projection_dim,
                                        num_layers=3, batch_norm=True)
        prediction = MoCoProjectionHead(self.projection_dim, self.hidden_dim, self.projection_dim,
                                        num_layers=2, batch_norm=True)
        return MomentumHead(projection, prediction, self.base_momentum, self.final_momentum)

    def embed(self, head: nn.Module, features_fn: FeaturesFn, first: Tensor, second: Tensor) -> dict[str, Tensor]:
        online_first, online_second = self.online(head, features_fn, first, second)
        keys = head.target_embed(torch.cat([first, second]))
        count = first.shape[0]
        return {"first": online_first, "second": online_second,
                "query_first": head.predict(online_first), "query_second": head.predict(online_second),
                "key_first": keys[:count], "key_second": keys[count:]}

    def empty_output(self, device: torch.device) -> dict[str, Tensor]:
        empty = super().empty_output(device)["first"]
        return {name: empty for name in ("query_first", "query_second", "key_first", "key_second")}

    def view_loss(self, output: dict[str, Tensor]) -> dict[str, Tensor]:
        """MoCo v3 Algorithm 1 on the global batch."""
        query_first, query_second = gathered_pair(output["query_first"].float(),
                                                  output["query_second"].float(), self.gathers)
        key_first, key_second = gathered_pair(output["key_first"].float(), output["key_second"].float(),
                                              self.gathers)
        if query_first.shape[0] == 0:
            return {"loss": (query_first.sum() + query_second.sum()) * 0.0}
        return {"loss": moco_v3_loss(query_first, query_second, key_first, key_second, self.temperature)}

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "projection_dim": self.projection_dim, "temperature": self.temperature}
