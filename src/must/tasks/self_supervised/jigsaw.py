"""Jigsaw puzzles (Noroozi & Favaro 2016, "Unsupervised Learning of Visual Representations by
Solving Jigsaw Puzzles").

* views:  a random square of the image resized to ``view_size``, cut into a 3x3 grid of cells;
          from each cell a smaller tile at a random offset (the gap stops the network from
          matching edges, sec. 3.2); the nine tiles shuffled by one permutation of a fixed set;
          the label is the permutation's index in the set.
* set:    ``num_permutations`` permutations of the 9 tiles chosen greedily for large Hamming
          distance (sec. 3.3, "the average Hamming distance ... should be large"): farthest-point
          selection over all 9! permutations, which also maximizes the *minimum* pairwise
          distance step by step; seeded, so every process and checkpoint has the same set.
* head:   each tile goes through the shared trunk on its own ("context-free network", sec. 3.1),
          pooled C5 -> a per-tile linear embedding, the nine embeddings concatenated in shuffled
          order -> MLP -> one logit per permutation.
"""

from __future__ import annotations

import itertools
from functools import lru_cache
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from must.data.sample import TaskBatch
from must.errors import ConfigError
from must.models.features import Features, FeatureSpec
from must.tasks.self_supervised.base import (
    FeaturesFn,
    PretextClassificationTask,
    mlp,
    pooled_c5,
    square_view,
    write_text,
)

GRID = 3
TILES = GRID * GRID


@lru_cache(maxsize=1)
def all_permutations() -> np.ndarray:
    """Every permutation of the 9 tiles, ``int8 [9!, 9]`` in lexicographic order."""
    return np.array(list(itertools.permutations(range(TILES))), dtype=np.int8)


@lru_cache(maxsize=8)
def permutation_set(count: int = 100, seed: int = 0) -> tuple[Tensor, int]:
    """``(int64 [count, 9] permutations, their minimum pairwise Hamming distance)``.

    Greedy farthest-point selection: start from a seeded random permutation, then repeatedly add
    the permutation farthest (in Hamming distance) from the set chosen so far, ties broken by the
    seeded generator. The distance of each added permutation to the set never grows, so the last
    one's is the set's minimum pairwise distance.
    """
    candidates = all_permutations()
    if not 1 <= count <= len(candidates):
        raise ConfigError(f"num_permutations must be in [1, {len(candidates)}], got {count}")
    columns = np.ascontiguousarray(candidates.T)  # one pass per tile position: ~30x faster
    rng = np.random.default_rng(seed)
    chosen = [int(rng.integers(len(candidates)))]
    distance_to_set = _hamming(columns, candidates[chosen[0]])
    minimum = TILES
    for _ in range(count - 1):
        farthest = int(distance_to_set.max())
        pick = int(rng.choice(np.flatnonzero(distance_to_set == farthest)))
        chosen.append(pick)
        minimum = min(minimum, farthest)
        np.minimum(distance_to_set, _hamming(columns, candidates[pick]), out=distance_to_set)
    return torch.from_numpy(candidates[chosen].astype(np.int64)), minimum


def _hamming(columns: np.ndarray, permutation: np.ndarray) -> np.ndarray:
    """Hamming distance of every candidate (``columns``: ``[9, N]``) to ``permutation``."""
    distance = np.zeros(columns.shape[1], dtype=np.int8)
    for position, tile in enumerate(permutation):
        distance += columns[position] != tile
    return distance


def cut_tiles(image: Tensor, tile_size: int, generator: torch.Generator) -> Tensor:
    """``[3, S, S]`` -> ``[9, 3, t, t]``: row-major 3x3 cells of side ``S // 3``, one tile of side
    ``t`` at a random offset inside each cell."""
    cell = image.shape[-1] // GRID
    if tile_size > cell:
        raise ValueError(f"tile_size {tile_size} exceeds the cell size {cell}")
    tiles = []
    for row in range(GRID):
        for column in range(GRID):
            top, left = torch.randint(0, cell - tile_size + 1, (2,), generator=generator).tolist()
            top, left = row * cell + top, column * cell + left
            tiles.append(image[:, top:top + tile_size, left:left + tile_size])
    return torch.stack(tiles)


def shuffle_tiles(tiles: Tensor, permutation: Tensor) -> Tensor:
    """Position ``i`` of the puzzle shows tile ``permutation[i]``."""
    return tiles[permutation]


def unshuffle_tiles(shuffled: Tensor, permutation: Tensor) -> Tensor:
    """The inverse of :func:`shuffle_tiles`: tile ``permutation[i]`` goes back from position ``i``."""
    tiles = torch.empty_like(shuffled)
    tiles[permutation] = shuffled
    return tiles


class TileEmbedding(nn.Module):
    """Pooled C5 of every tile -> ``dim`` (ReLU), the nine of one puzzle concatenated: the
    context-free part shared by jigsaw and PIRL's ``g``."""

    def __init__(self, in_channels: int, dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_channels, dim)

    def forward(self, features: Features) -> Tensor:
        """Features of ``9 B`` tiles (puzzle-major) -> ``[B, 9 * dim]``."""
        embedded = torch.relu(self.linear(pooled_c5(features)))
        return embedded.reshape(-1, TILES * embedded.shape[-1])


class JigsawHead(nn.Module):
    reads_pyramid = False  # pooled C5 only: the model need not run the FPN for it

    def __init__(self, in_channels: int, tile_dim: int, hidden: int, num_permutations: int) -> None:
        super().__init__()
        self.tiles = TileEmbedding(in_channels, tile_dim)
        self.classifier = mlp([TILES * tile_dim, hidden, num_permutations])

    def forward(self, features: Features, target: TaskBatch | None = None) -> Tensor:
        return self.classifier(self.tiles(features))


class JigsawTask(PretextClassificationTask):
    name = "jigsaw"

    def __init__(self, view_size: int = 96, tile_size: int = 28, num_permutations: int = 100,
                 seed: int = 0, tile_dim: int = 128, hidden_dim: int = 512) -> None:
        self.view_size = view_size
        self.tile_size = tile_size
        self.num_outputs = num_permutations
        self.seed = seed
        self.tile_dim = tile_dim
        self.hidden_dim = hidden_dim
        self.permutations, self.min_hamming_distance = permutation_set(num_permutations, seed)
        if tile_size > view_size // GRID:
            raise ConfigError(f"tile_size {tile_size} exceeds the cell size {view_size // GRID}")

    def build_head(self, spec: FeatureSpec) -> JigsawHead:
        return JigsawHead(spec.c5_channels, self.tile_dim, self.hidden_dim, self.num_outputs)

    def make_views(self, image: Tensor, generator: torch.Generator,
                   index: int | None = None) -> dict[str, Tensor]:
        """``{"tiles": uint8 [9, 3, t, t] shuffled, "label": int64 []}`` (index into the set)."""
        tiles = cut_tiles(square_view(image, self.view_size, generator), self.tile_size, generator)
        label = torch.randint(0, self.num_outputs, (), generator=generator)
        return {"tiles": shuffle_tiles(tiles, self.permutations[label]), "label": label}

    def forward_views(self, head: nn.Module, features_fn: FeaturesFn,
                      target: TaskBatch | None) -> dict[str, Tensor] | None:
        return self.classify_parts(head, features_fn, target, "tiles")

    def draw(self, image: np.ndarray, prediction: Tensor) -> np.ndarray:
        order = "".join(str(int(index)) for index in self.permutations[int(prediction)])
        return write_text(image, f"jigsaw: {order}")

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "kind": "self_supervised", "num_permutations": self.num_outputs,
                "seed": self.seed, "tile_size": self.tile_size}
