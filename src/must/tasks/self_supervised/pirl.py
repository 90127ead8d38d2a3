"""PIRL, Pretext-Invariant Representation Learning (Misra & van der Maaten 2020).

The representation of an image ``f(v_I)`` and of its jigsaw-transformed version ``g(v_{I^t})``
should both match the image's memory-bank entry ``m_I`` and differ from other images' entries
(sec. 3.2, eq. 5)::

    L(I, I^t) = lambda * L_NCE(m_I, g(v_{I^t})) + (1 - lambda) * L_NCE(m_I, f(v_I))

* views:  ``"image"``: an augmented view of the image (random resized crop, flip, colour jitter);
          ``"tiles"``: nine jigsaw tiles of an independent crop, shuffled by a uniformly random
          permutation (sec. 4.1: PIRL uses all 9! permutations, the order is not predicted);
          ``"index"``: the image's memory-bank slot, its position in the training set: one
          entry per image (``bank_size`` must be at least the number of training images; a
          smaller bank is refused, never shared by two images).
* head:   ``f``: pooled C5 -> linear -> 128-d; ``g``: each tile through the trunk, pooled C5 ->
          linear per tile, the nine concatenated -> linear -> 128-d (sec. 4.1); both L2-normalized.
* bank:   ``m_I``, an exponential moving average of ``f(v_I)`` (momentum 0.5, sec. 3.2), kept as a
          buffer of the head (so it is checkpointed); updates are gathered over DDP ranks, so every
          rank keeps the same bank. NCE (:mod:`must.losses.nce`) with ``num_negatives`` entries
          drawn uniformly from the bank, cosine similarity at temperature 0.07.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from must import distributed
from must.data.sample import TaskBatch
from must.errors import ConfigError
from must.losses.gather import gather_rows
from must.losses.nce import estimate_normalizer, nce_loss
from must.models.features import Features, FeatureSpec
from must.tasks.self_supervised.base import (
    BatchMean,
    FeaturesFn,
    SelfSupervisedTask,
    check_instance_count,
    draw_embedding,
    instance_index,
    pooled_c5,
    present_views,
    resize_square,
    seeded,
    to_unit,
)
from must.tasks.self_supervised.jigsaw import TILES, TileEmbedding, cut_tiles, shuffle_tiles
from must.tasks.self_supervised.two_views import simclr_transform


class PirlHead(nn.Module):
    """``f`` and ``g`` projections and the memory bank (see the module docstring)."""

    reads_pyramid = False  # pooled C5 only: the model need not run the FPN for it

    def __init__(self, in_channels: int, tile_dim: int, dim: int, bank_size: int) -> None:
        super().__init__()
        self.image_projection = nn.Linear(in_channels, dim)
        self.tiles = TileEmbedding(in_channels, tile_dim)
        self.tile_projection = nn.Linear(TILES * tile_dim, dim)
        # Random unit vectors until an image's first visit writes its entry (Wu et al. 2018).
        self.register_buffer("bank", F.normalize(torch.randn(bank_size, dim), dim=1))
        self.register_buffer("normalizer", torch.zeros(()))  # NCE's Z; 0 = not estimated yet

    def embed_image(self, features: Features) -> Tensor:
        return F.normalize(self.image_projection(pooled_c5(features)), dim=1)

    def embed_tiles(self, features: Features) -> Tensor:
        return F.normalize(self.tile_projection(self.tiles(features)), dim=1)

    def forward(self, features: Features, target: TaskBatch | None = None) -> Tensor:
        """``f(v_I)`` for whole images (the representation used downstream)."""
        return self.embed_image(features)

    @torch.no_grad()
    def update_bank(self, index: Tensor, embedding: Tensor, momentum: float) -> None:
        """``m_I <- normalize(momentum * m_I + (1 - momentum) * f(v_I))`` for every rank's images
        (a collective under DDP: every rank calls it, with or without images)."""
        index, _ = gather_rows(index)
        embedding, _ = gather_rows(embedding.detach().float())
        mixed = momentum * self.bank[index] + (1 - momentum) * embedding
        self.bank[index] = F.normalize(mixed, dim=1)

    @torch.no_grad()
    def estimate_normalizer_once(self, similarities: Tensor | None, temperature: float) -> None:
        """Sets NCE's ``Z`` from the first batch (Wu et al. 2018), averaged over the ranks that had
        images (a collective under DDP while ``Z`` is unset)."""
        if float(self.normalizer) != 0.0:
            return
        estimate = torch.zeros(2, device=self.bank.device)  # (estimate, whether this rank has one)
        if similarities is not None and similarities.numel():
            estimate[0] = estimate_normalizer(similarities, self.bank.shape[0], temperature)
            estimate[1] = 1.0
        total = distributed.all_reduce_mean(estimate)
        if float(total[1]) > 0:
            self.normalizer.fill_(float(total[0] / total[1]))


class PirlAccuracy(BatchMean):
    """How often ``g(v_{I^t})`` is closer to its own bank entry than to every sampled negative."""

    def measure(self, output: dict[str, Tensor]) -> tuple[Tensor, int]:
        positive = (output["transformed"] * output["positive"]).sum(dim=1)
        similarity = output["transformed"] @ output["negatives"].T
        hardest = similarity.masked_fill(output["own"], float("-inf")).max(dim=1).values
        return (positive > hardest).float().mean(), positive.shape[0]


class PirlTask(SelfSupervisedTask):
    name = "pirl"
    primary_metric = "accuracy"

    def __init__(self, view_size: int = 64, tile_size: int = 18, bank_size: int = 4096,
                 num_negatives: int = 1024, embedding_dim: int = 128, tile_dim: int = 128,
                 temperature: float = 0.07, momentum: float = 0.5, transformed_weight: float = 0.5) -> None:
        if tile_size > view_size // 3:
            raise ConfigError(f"tile_size {tile_size} exceeds the jigsaw cell size {view_size // 3}")
        self.view_size = view_size
        self.tile_size = tile_size
        self.bank_size = bank_size
        self.num_negatives = num_negatives
        self.embedding_dim = embedding_dim
        self.tile_dim = tile_dim
        self.temperature = temperature
        self.momentum = momentum
        self.transformed_weight = transformed_weight
        self.transform = simclr_transform(view_size, color_strength=0.5, blur=False, crop_scale=(0.2, 1.0))

    def build_head(self, spec: FeatureSpec) -> PirlHead:
        return PirlHead(spec.c5_channels, self.tile_dim, self.embedding_dim, self.bank_size)

    def check_dataset_size(self, count: int) -> None:
        check_instance_count(count, self.bank_size, self.name, "bank_size")

    def make_views(self, image: Tensor, generator: torch.Generator,
                   index: int | None = None) -> dict[str, Tensor]:
        """``{"image": uint8 [3, s, s], "tiles": uint8 [9, 3, t, t], "index": int64 []}``."""
        index = instance_index(index, self.bank_size, self.name, "bank_size")
        with seeded(generator):
            view, crop = self.transform(image), self.transform(image)
        tiles = cut_tiles(resize_square(crop, self.view_size), self.tile_size, generator)
        permutation = torch.randperm(TILES, generator=generator)
        return {"image": view, "tiles": shuffle_tiles(tiles, permutation), "index": torch.tensor(index)}

    def forward_views(self, head: nn.Module, features_fn: FeaturesFn,
                      target: TaskBatch | None) -> dict[str, Tensor] | None:
        views = present_views(target)
        if views is None:
            if distributed.is_initialized():  # join the other ranks' collectives with no images
                head.estimate_normalizer_once(None, self.temperature)
                if head.training:
                    head.update_bank(torch.zeros(0, dtype=torch.long, device=head.bank.device),
                                     head.bank.new_zeros(0, head.bank.shape[1]), self.momentum)
            return None
        image = head.embed_image(features_fn(to_unit(views["image"])))
        transformed = head.embed_tiles(features_fn(to_unit(views["tiles"].flatten(0, 1))))
        with torch.no_grad():
            positive = head.bank[views["index"]].clone()
            draw = torch.randint(0, self.bank_size, (self.num_negatives,), device=image.device)
            negatives = head.bank[draw].clone()
            # A query's own slot drawn as noise would push it from its own positive: left out.
            own = draw[None, :] == views["index"][:, None]
            head.estimate_normalizer_once(transformed @ negatives.T, self.temperature)
            if head.training:  # evaluation passes read the bank, never write it
                head.update_bank(views["index"], image, self.momentum)
        return {"image": image, "transformed": transformed, "positive": positive,
                "negatives": negatives, "own": own, "normalizer": head.normalizer.clone()}

    def view_loss(self, output: dict[str, Tensor]) -> dict[str, Tensor]:
        """PIRL eq. 5: ``lambda * L_NCE(m_I, g) + (1 - lambda) * L_NCE(m_I, f)``."""
        parts = {}
        for name in ("transformed", "image"):
            query = output[name]
            negatives = (query @ output["negatives"].T).masked_fill(output["own"], float("-inf"))
            parts[f"nce_{name}"] = nce_loss((query * output["positive"]).sum(dim=1), negatives,
                                            self.bank_size, output["normalizer"], self.temperature)
        weight = self.transformed_weight
        return {"loss": weight * parts["nce_transformed"] + (1 - weight) * parts["nce_image"], **parts}

    def predict(self, output: dict[str, Tensor] | None) -> list[Tensor]:
        """``f(v_I)`` per image."""
        return [] if output is None else list(output["image"].detach().float().unbind(0))

    def metric(self) -> PirlAccuracy:
        return PirlAccuracy()

    def draw(self, image: np.ndarray, prediction: Tensor) -> np.ndarray:
        return draw_embedding(image, prediction, self.name)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "kind": "self_supervised", "bank_size": self.bank_size,
                "embedding_dim": self.embedding_dim}
