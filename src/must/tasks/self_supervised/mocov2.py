"""MoCo v2: Momentum Contrast (He et al. 2020) with the improvements of Chen et al. 2020
("Improved Baselines with Momentum Contrastive Learning": MLP head, stronger augmentation,
temperature 0.2).

* views:  two augmentations of the image (:class:`~.two_views.TwoViewTask`): the query's and the
          key's (Algorithm 1).
* head:   query encoder's projection, a 2-layer MLP (lightly's ``MoCoProjectionHead``); the key
          encoder, a momentum copy of backbone and projection (:mod:`.momentum`, ``m = 0.999``
          constant, He et al. sec. 3.2 eq. 2); the queue of the last ``queue_size`` keys, a
          buffer of the head (checkpointed), every rank's keys enqueued in rank order (the paper
          shuffles BN across GPUs; here the keys are gathered, the queue identical on every rank).
* loss:   InfoNCE against the queue (He et al. eq. 1, :func:`must.losses.moco.moco_loss`).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from lightly.models.modules.heads import MoCoProjectionHead
from torch import Tensor, nn

from must.errors import ConfigError
from must.losses.gather import gather_rows
from must.losses.moco import moco_loss
from must.models.features import FeatureSpec
from must.tasks.self_supervised.base import FeaturesFn
from must.tasks.self_supervised.momentum import MomentumHead, check_momentum
from must.tasks.self_supervised.two_views import TwoViewTask


class MoCoQueueHead(MomentumHead):
    """:class:`MomentumHead` plus the queue of keys (``[K, D]``, random unit vectors at first,
    as in the paper's code) and its write position."""

    def __init__(self, projection: nn.Module, momentum: float, queue_size: int, dim: int) -> None:
        super().__init__(projection, None, momentum, momentum)
        self.register_buffer("queue", F.normalize(torch.randn(queue_size, dim), dim=1))
        self.register_buffer("queue_position", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def enqueue(self, keys: Tensor) -> None:
        """Every rank's ``keys`` replace the oldest entries (a collective under DDP: every rank
        calls it, with or without keys)."""
        keys, _ = gather_rows(F.normalize(keys.detach().float(), dim=1))
        size = self.queue.shape[0]
        keys = keys[-size:]  # more keys than slots: the newest fill the queue
        slots = (int(self.queue_position) + torch.arange(keys.shape[0], device=keys.device)) % size
        self.queue[slots] = keys.to(self.queue.dtype)
        self.queue_position.fill_((int(self.queue_position) + keys.shape[0]) % size)


class MoCoV2Task(TwoViewTask):
    name = "mocov2"

    def __init__(self, view_size: int = 64, projection_dim: int = 128, hidden_dim: int = 512,
                 queue_size: int = 1024, temperature: float = 0.2, momentum: float = 0.999,
                 color_strength: float = 0.5, blur: bool = True,
                 crop_scale: tuple[float, float] = (0.2, 1.0)) -> None:
        super().__init__(view_size, color_strength, blur, crop_scale)
        if temperature <= 0:
            raise ConfigError(f"temperature must be positive, got {temperature}")
        if queue_size < 1:
            raise ConfigError(f"queue_size must be at least 1, got {queue_size}")
        check_momentum(momentum, momentum)
        self.projection_dim, self.hidden_dim = projection_dim, hidden_dim
        self.queue_size, self.temperature, self.momentum = queue_size, temperature, momentum

    def build_head(self, spec: FeatureSpec) -> MoCoQueueHead:
        projection = MoCoProjectionHead(spec.c5_channels, self.hidden_dim, self.projection_dim)
        return MoCoQueueHead(projection, self.momentum, self.queue_size, self.projection_dim)

    def embed(self, head: nn.Module, features_fn: FeaturesFn, first: Tensor, second: Tensor) -> dict[str, Tensor]:
        """Query from the first view, key from the second (Algorithm 1); the queue as it was
        before this batch's keys enter it."""
        query = head(features_fn(first))
        key = head.target_embed(second)
        queue = head.queue.clone()
        if head.training:  # evaluation passes read the queue, never write it
            head.enqueue(key)
        return {"first": query, "second": key, "queue": queue}

    def join_without_views(self, head: nn.Module) -> None:
        if head.training:
            head.enqueue(head.queue.new_zeros(0, self.projection_dim))

    def view_loss(self, output: dict[str, Tensor]) -> dict[str, Tensor]:
        """MoCo eq. 1: the key against the queued negatives."""
        return {"loss": moco_loss(output["first"], output["second"], output["queue"], self.temperature)}

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "projection_dim": self.projection_dim, "queue_size": self.queue_size}
