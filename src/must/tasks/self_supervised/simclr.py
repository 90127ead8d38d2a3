"""SimCLR (Chen et al. 2020, "A Simple Framework for Contrastive Learning of Visual
Representations").

* views:  two independent augmentations of the image (sec. 3, appendix A): random resized crop
          (scale 0.08-1) + horizontal flip, colour jitter (strength ``s``: brightness, contrast,
          saturation ``0.8 s``, hue ``0.2 s``) with p = 0.8, grayscale with p = 0.2, Gaussian blur
          (kernel 10% of the side, sigma 0.1-2.0) with p = 0.5. torchvision.transforms.v2 on tensors.
* head:   projection MLP ``g`` on pooled C5 (sec. 2.1: one hidden layer with ReLU).
* loss:   NT-Xent with temperature (:func:`must.losses.ntxent.nt_xent_loss`), negatives gathered
          across DDP ranks.
* metric: contrastive accuracy: how often a view's nearest neighbour is its positive.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from must.data.sample import TaskBatch
from must.errors import ConfigError
from must.losses.ntxent import nt_xent_loss
from must.models.features import Features, FeatureSpec
from must.tasks.self_supervised.base import FeaturesFn, mlp, pooled_c5
from must.tasks.self_supervised.two_views import ContrastiveAccuracy, TwoViewTask, simclr_transform

__all__ = ["ContrastiveAccuracy", "ProjectionHead", "SimCLRTask", "simclr_transform"]


class ProjectionHead(nn.Module):
    """``g(h) = W2 ReLU(W1 h)`` on pooled C5 (SimCLR sec. 2.1)."""

    reads_pyramid = False  # pooled C5 only: the model need not run the FPN for it

    def __init__(self, in_channels: int, hidden: int, out: int) -> None:
        super().__init__()
        self.mlp = mlp([in_channels, hidden, out])

    def forward(self, features: Features, target: TaskBatch | None = None) -> Tensor:
        return self.mlp(pooled_c5(features))


class SimCLRTask(TwoViewTask):
    """Both views through the trunk as one batch, image by image (rows ``2i``, ``2i + 1``)."""

    name = "simclr"

    def __init__(self, view_size: int = 64, temperature: float = 0.1, projection_dim: int = 128,
                 hidden_dim: int | None = None, color_strength: float = 0.5, blur: bool = True,
                 gather: bool = True) -> None:
        if temperature <= 0:
            raise ConfigError(f"temperature must be positive, got {temperature}")
        super().__init__(view_size, color_strength, blur)
        self.temperature = temperature
        self.projection_dim = projection_dim
        self.hidden_dim = hidden_dim
        self.gathers = gather  # NT-Xent's negatives come from every rank

    def build_head(self, spec: FeatureSpec) -> ProjectionHead:
        return ProjectionHead(spec.c5_channels, self.hidden_dim or spec.c5_channels, self.projection_dim)

    def embed(self, head: nn.Module, features_fn: FeaturesFn, first: Tensor, second: Tensor) -> dict[str, Tensor]:
        projections = head(features_fn(torch.stack([first, second], dim=1).flatten(0, 1)))
        projections = projections.view(first.shape[0], 2, -1)
        return {"first": projections[:, 0], "second": projections[:, 1]}

    def view_loss(self, output: dict[str, Tensor]) -> dict[str, Tensor]:
        return {"loss": nt_xent_loss(output["first"], output["second"], self.temperature, self.gathers)}

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "projection_dim": self.projection_dim}
