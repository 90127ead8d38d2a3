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

import numpy as np
import torch
from torch import Tensor, nn
from torchmetrics.aggregation import MeanMetric
from torchvision.transforms import v2

from must import distributed
from must.data.sample import TaskBatch
from must.errors import ConfigError
from must.losses.ntxent import contrastive_accuracy, nt_xent_loss
from must.models.features import Features, FeatureSpec
from must.tasks.self_supervised.base import (
    FeaturesFn,
    SelfSupervisedTask,
    draw_embedding,
    mlp,
    pooled_c5,
    present_views,
    seeded,
    to_unit,
)


def simclr_transform(size: int, color_strength: float = 0.5, blur: bool = True,
                     crop_scale: tuple[float, float] = (0.08, 1.0)) -> v2.Compose:
    """SimCLR's augmentation (appendix A) for ``uint8 [3, H, W]`` tensors -> ``[3, size, size]``."""
    jitter = 0.8 * color_strength
    steps: list[nn.Module] = [
        v2.RandomResizedCrop(size, scale=crop_scale, antialias=True),
        v2.RandomHorizontalFlip(),
        v2.RandomApply([v2.ColorJitter(jitter, jitter, jitter, 0.2 * color_strength)], p=0.8),
        v2.RandomGrayscale(p=0.2),
    ]
    if blur:
        kernel = max(3, int(0.1 * size) // 2 * 2 + 1)  # odd, ~10% of the side
        steps.append(v2.RandomApply([v2.GaussianBlur(kernel, sigma=(0.1, 2.0))], p=0.5))
    return v2.Compose(steps)


class ProjectionHead(nn.Module):
    """``g(h) = W2 ReLU(W1 h)`` on pooled C5 (SimCLR sec. 2.1)."""

    reads_pyramid = False  # pooled C5 only: the model need not run the FPN for it

    def __init__(self, in_channels: int, hidden: int, out: int) -> None:
        super().__init__()
        self.mlp = mlp([in_channels, hidden, out])

    def forward(self, features: Features, target: TaskBatch | None = None) -> Tensor:
        return self.mlp(pooled_c5(features))


class ContrastiveAccuracy:
    """Mean (over views, DDP-synced by torchmetrics) of :func:`contrastive_accuracy` per batch."""

    def __init__(self) -> None:
        self.mean = MeanMetric()

    def update(self, output: dict[str, Tensor] | None, target: TaskBatch) -> None:
        if output is None:
            return
        first, second = output["first"].detach(), output["second"].detach()
        self.mean.to(first.device)
        self.mean.update(contrastive_accuracy(first, second), weight=2 * first.shape[0])

    def compute(self) -> dict[str, float]:
        return {"accuracy": float(self.mean.compute())}

    def reset(self) -> None:
        self.mean.reset()


class SimCLRTask(SelfSupervisedTask):
    name = "simclr"
    primary_metric = "accuracy"

    def __init__(self, view_size: int = 64, temperature: float = 0.1, projection_dim: int = 128,
                 hidden_dim: int | None = None, color_strength: float = 0.5, blur: bool = True,
                 gather: bool = True) -> None:
        if temperature <= 0:
            raise ConfigError(f"temperature must be positive, got {temperature}")
        self.view_size = view_size
        self.temperature = temperature
        self.projection_dim = projection_dim
        self.hidden_dim = hidden_dim
        self.gather = gather
        self.transform = simclr_transform(view_size, color_strength, blur)

    def build_head(self, spec: FeatureSpec) -> ProjectionHead:
        return ProjectionHead(spec.c5_channels, self.hidden_dim or spec.c5_channels, self.projection_dim)

    def make_views(self, image: Tensor, generator: torch.Generator,
                   index: int | None = None) -> dict[str, Tensor]:
        """``{"views": uint8 [2, 3, s, s]}``: two independent draws of the augmentation."""
        with seeded(generator):
            return {"views": torch.stack([self.transform(image), self.transform(image)])}

    def forward_views(self, head: nn.Module, features_fn: FeaturesFn,
                      target: TaskBatch | None) -> dict[str, Tensor] | None:
        views = present_views(target)
        if views is None:
            return None
        pairs = views["views"]  # [B, 2, 3, s, s]: one trunk pass over both views of every image
        projections = head(features_fn(to_unit(pairs.flatten(0, 1))))
        projections = projections.view(pairs.shape[0], 2, -1)
        return {"first": projections[:, 0], "second": projections[:, 1]}

    def loss(self, output: dict[str, Tensor] | None, target: TaskBatch) -> dict[str, Tensor]:
        if output is None and self.gather and distributed.is_initialized():
            # No views here, but the other ranks' gather is a collective this rank must join, and
            # so is its backward (exact gradient): the empty rows need a graph to backpropagate.
            empty = torch.zeros(0, self.projection_dim, device=target.present.device,
                                requires_grad=torch.is_grad_enabled())
            return {"loss": nt_xent_loss(empty, empty, self.temperature)}
        return super().loss(output, target)

    def view_loss(self, output: dict[str, Tensor]) -> dict[str, Tensor]:
        return {"loss": nt_xent_loss(output["first"], output["second"], self.temperature, self.gather)}

    def predict(self, output: dict[str, Tensor] | None) -> list[Tensor]:
        """The first view's projection per image."""
        return [] if output is None else list(output["first"].detach().float().unbind(0))

    def metric(self) -> ContrastiveAccuracy:
        return ContrastiveAccuracy()

    def draw(self, image: np.ndarray, prediction: Tensor) -> np.ndarray:
        return draw_embedding(image, prediction, self.name)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "kind": "self_supervised", "projection_dim": self.projection_dim}
