"""What the two-view methods share (SimCLR, BYOL, MoCo v2 / v3, SimSiam, Barlow Twins, VICReg): two
independent augmentations of every image (SimCLR's, :func:`simclr_transform`; BYOL sec. 3.3 and
the others use the same family), one trunk pass over both views, an embedding per
image as the prediction, contrastive accuracy as the diagnostic metric.

:func:`gathered_pair` is how the methods whose loss reads batch statistics (Barlow Twins'
cross-correlation, VICReg's variance and covariance, MoCo v3's in-batch keys) see the global batch
under DDP: every rank gathers both views' embeddings of every rank (exact gradient, any number of
rows per rank, zero included: :func:`must.losses.gather.gather_rows`) and computes the loss of the
whole global batch. Each rank's loss is then the one-process loss, and since the gather's backward
sums the ranks' gradients and DDP averages them, so is the gradient. (lightly's
``gather_distributed`` needs equal batches on every rank; a mixed student batch may give a rank
few views or none.)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torchvision.transforms import v2

from must import distributed
from must.data.sample import TaskBatch
from must.losses.gather import gather_rows
from must.losses.ntxent import contrastive_accuracy
from must.models.features import Features, FeatureSpec
from must.tasks.self_supervised.base import (BatchMean, FeaturesFn, SelfSupervisedTask, draw_embedding, pooled_c5,
                                             present_views, seeded, to_unit)
from must.tasks.self_supervised.momentum import check_momentum


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


class ContrastiveAccuracy(BatchMean):
    """Mean over views of :func:`contrastive_accuracy` per batch."""

    def measure(self, output: dict[str, Tensor]) -> tuple[Tensor, int]:
        first, second = output["first"].detach(), output["second"].detach()
        return contrastive_accuracy(first, second), 2 * first.shape[0]


class EmbeddingHead(nn.Module):
    """``projection(pooled C5)``, and a ``predict`` MLP (identity when there is none): the head of
    the methods without a momentum encoder (SimSiam, Barlow Twins, VICReg)."""

    reads_pyramid = False

    def __init__(self, projection: nn.Module, prediction: nn.Module | None = None) -> None:
        super().__init__()
        self.projection = projection
        self.prediction = prediction if prediction is not None else nn.Identity()

    def forward(self, features: Features, target: TaskBatch | None = None) -> Tensor:
        return self.projection(pooled_c5(features))

    def predict(self, projection: Tensor) -> Tensor:
        return self.prediction(projection)


def start_momentum_target(head: nn.Module) -> None:
    """A momentum head copies the online weights at the first training pass, views or not: under
    DDP every rank then starts its target from the same weights, also a rank whose first batch had
    no views for this task."""
    start = getattr(head, "start", None)
    if start is not None and head.training:
        start()


def gathered_pair(first: Tensor, second: Tensor, gather: bool = True) -> tuple[Tensor, Tensor]:
    """``([N_all, D], [N_all, D])``: both views of every rank's images in rank order (one gather
    for both, so ranks cannot pair them wrongly); the local rows when ``gather`` is off or in one
    process. A collective under DDP: every rank calls it, also with zero rows."""
    if not gather or not distributed.is_initialized():
        return first, second
    width = first.shape[1]
    pairs, _ = gather_rows(torch.cat([first, second], dim=1))
    return pairs[:, :width], pairs[:, width:]


class TwoViewTask(SelfSupervisedTask):
    """Two views per image (``{"views": uint8 [2, 3, s, s]}``); subclasses say how the head embeds
    them (:meth:`embed`) and their loss (``view_loss``). The output holds ``"first"`` and
    ``"second"``, the two views' online projections (metric and prediction), plus the method's own."""

    primary_metric = "accuracy"
    projection_dim: int
    gathers = False
    """Whether the loss is a collective under DDP (ranks without views must still compute it)."""

    def __init__(self, view_size: int = 64, color_strength: float = 0.5, blur: bool = True,
                 crop_scale: tuple[float, float] = (0.08, 1.0)) -> None:
        self.view_size = view_size
        self.transform = simclr_transform(view_size, color_strength, blur, tuple(crop_scale))

    def make_views(self, image: Tensor, generator: torch.Generator,
                   index: int | None = None) -> dict[str, Tensor]:
        """``{"views": uint8 [2, 3, s, s]}``: two independent draws of the augmentation."""
        with seeded(generator):
            return {"views": torch.stack([self.transform(image), self.transform(image)])}

    def forward_views(self, head: nn.Module, features_fn: FeaturesFn,
                      target: TaskBatch | None) -> dict[str, Tensor] | None:
        start_momentum_target(head)
        views = present_views(target)
        if views is None:
            self.join_without_views(head)
            return None
        pairs = to_unit(views["views"])  # [B, 2, 3, s, s]: one trunk pass over both views
        return self.embed(head, features_fn, pairs[:, 0], pairs[:, 1])

    def join_without_views(self, head: nn.Module) -> None:
        """Takes part, without views, in the collectives ``forward_views`` runs (none by default)."""

    def embed(self, head: nn.Module, features_fn: FeaturesFn, first: Tensor,
              second: Tensor) -> dict[str, Tensor]:
        """The output for views ``first`` and ``second`` (``float [B, 3, s, s]``); a method with
        more views (DINO's multi-crop) overrides ``forward_views`` instead."""
        raise NotImplementedError(f"{type(self).__name__} defines neither embed nor forward_views")

    @staticmethod
    def online(head: nn.Module, features_fn: FeaturesFn, first: Tensor, second: Tensor) -> tuple[Tensor, Tensor]:
        """Both views through the trunk as one batch, then ``head``: ``([B, D], [B, D])``."""
        projections = head(features_fn(torch.cat([first, second])))
        return projections[: first.shape[0]], projections[first.shape[0]:]

    def empty_output(self, device: torch.device) -> dict[str, Tensor]:
        """Zero-row embeddings with a graph: what a rank without views feeds a gathered loss."""
        empty = torch.zeros(0, self.projection_dim, device=device, requires_grad=torch.is_grad_enabled())
        return {"first": empty, "second": empty}

    def loss(self, output: dict[str, Tensor] | None, target: TaskBatch) -> dict[str, Tensor]:
        if output is None and self.gathers and distributed.is_initialized():
            # No views here, but the other ranks' gather (and its backward) is a collective.
            return self.view_loss(self.empty_output(target.present.device))
        return super().loss(output, target)

    def predict(self, output: dict[str, Tensor] | None) -> list[Tensor]:
        """The first view's online projection per image."""
        return [] if output is None else list(output["first"].detach().float().unbind(0))

    def metric(self) -> ContrastiveAccuracy:
        return ContrastiveAccuracy()

    def draw(self, image: np.ndarray, prediction: Tensor) -> np.ndarray:
        return draw_embedding(image, prediction, self.name)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "kind": "self_supervised", "view_size": self.view_size}


class MomentumPairTask(TwoViewTask):
    """A method that compares each view's online prediction with the momentum target's projection
    of the other view (BYOL sec. 3.1, MoCo v3 Algorithm 1: queries and keys): the output holds both
    views' online projections (``first``, ``second``), their predictions (``prediction_first``,
    ``prediction_second``) and target projections (``target_first``, ``target_second``).
    Subclasses build a :class:`~.momentum.MomentumHead` and say their ``view_loss``."""

    def __init__(self, view_size: int, projection_dim: int, hidden_dim: int, base_momentum: float,
                 final_momentum: float, color_strength: float, blur: bool,
                 crop_scale: tuple[float, float]) -> None:
        super().__init__(view_size, color_strength, blur, crop_scale)
        check_momentum(base_momentum, final_momentum)
        self.projection_dim, self.hidden_dim = projection_dim, hidden_dim
        self.base_momentum, self.final_momentum = base_momentum, final_momentum

    def embed(self, head: nn.Module, features_fn: FeaturesFn, first: Tensor, second: Tensor) -> dict[str, Tensor]:
        online_first, online_second = self.online(head, features_fn, first, second)
        targets = head.target_embed(torch.cat([first, second]))  # one target pass over both views
        count = first.shape[0]
        return {"first": online_first, "second": online_second,
                "prediction_first": head.predict(online_first), "prediction_second": head.predict(online_second),
                "target_first": targets[:count], "target_second": targets[count:]}


class BatchStatisticsTask(TwoViewTask):
    """A method whose loss reads statistics of the whole batch of projections (Barlow Twins'
    cross-correlation, VICReg's variance and covariance): a projector from pooled C5 and
    ``criterion(first, second)`` on the global batch (:func:`gathered_pair`), zero below two
    images. Subclasses set ``projector`` (a lightly head class) and ``criterion``."""

    gathers = True
    projector: type[nn.Module]
    criterion: nn.Module

    def __init__(self, view_size: int, projection_dim: int, hidden_dim: int, gather: bool,
                 color_strength: float, blur: bool, crop_scale: tuple[float, float]) -> None:
        super().__init__(view_size, color_strength, blur, crop_scale)
        self.projection_dim, self.hidden_dim = projection_dim, hidden_dim
        self.gathers = gather

    def build_head(self, spec: FeatureSpec) -> EmbeddingHead:
        return EmbeddingHead(self.projector(spec.c5_channels, self.hidden_dim, self.projection_dim))

    def embed(self, head: nn.Module, features_fn: FeaturesFn, first: Tensor, second: Tensor) -> dict[str, Tensor]:
        projection_first, projection_second = self.online(head, features_fn, first, second)
        return {"first": projection_first, "second": projection_second}

    def view_loss(self, output: dict[str, Tensor]) -> dict[str, Tensor]:
        first, second = gathered_pair(output["first"].float(), output["second"].float(), self.gathers)
        if first.shape[0] < 2:  # no batch statistics
            return {"loss": (first.sum() + second.sum()) * 0.0}
        return {"loss": self.criterion(first, second)}

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "projection_dim": self.projection_dim}
