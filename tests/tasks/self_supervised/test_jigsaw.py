"""Jigsaw: the permutation set (distinct, seeded, with the reported minimum Hamming distance), the
tile shuffle and its inverse, tiles cut from their own cells, training."""

import itertools

import numpy as np
import pytest
import torch

from must.tasks.self_supervised.base import resize_square
from must.tasks.self_supervised.jigsaw import (
    JigsawTask,
    cut_tiles,
    permutation_set,
    shuffle_tiles,
    unshuffle_tiles,
)


def pairwise_min_hamming(permutations: torch.Tensor) -> int:
    rows = permutations.numpy()
    return min(int((a != b).sum()) for a, b in itertools.combinations(rows, 2))


@pytest.mark.parametrize("count", [10, 100])
def test_permutation_set(count: int) -> None:
    permutations, minimum = permutation_set(count, seed=0)
    assert permutations.shape == (count, 9)
    assert all(sorted(row) == list(range(9)) for row in permutations.tolist())
    assert len({tuple(row) for row in permutations.tolist()}) == count
    assert pairwise_min_hamming(permutations) == minimum
    # Farthest-point selection keeps puzzles far apart: 100 random permutations include a pair
    # at distance 2 or 3 (measured over 20 seeds).
    assert minimum >= (8 if count == 10 else 6)


def test_permutation_set_is_seeded() -> None:
    assert torch.equal(permutation_set(20, seed=1)[0], permutation_set(20, seed=1)[0])
    assert not torch.equal(permutation_set(20, seed=1)[0], permutation_set(20, seed=2)[0])
    with pytest.raises(ValueError):
        permutation_set(0)


def test_shuffle_inverts() -> None:
    tiles = torch.arange(9 * 3 * 2 * 2).reshape(9, 3, 2, 2)
    generator = torch.Generator().manual_seed(0)
    for _ in range(5):
        permutation = torch.randperm(9, generator=generator)
        shuffled = shuffle_tiles(tiles, permutation)
        for position in range(9):
            assert torch.equal(shuffled[position], tiles[permutation[position]])
        assert torch.equal(unshuffle_tiles(shuffled, permutation), tiles)


@pytest.mark.parametrize("seed", range(3))
def test_views_hold_tiles_of_their_cells(photos: list[torch.Tensor], seed: int) -> None:
    """Unshuffling by the labelled permutation puts back, at position i, a crop from cell i."""
    task = JigsawTask(view_size=48, tile_size=12, num_permutations=10)
    views = task.make_views(photos[0], torch.Generator().manual_seed(seed))
    assert views["tiles"].shape == (9, 3, 12, 12) and 0 <= int(views["label"]) < 10
    tiles = unshuffle_tiles(views["tiles"], task.permutations[views["label"]])
    square = resize_square(photos[0], 48)
    for index, tile in enumerate(tiles):
        row, column = divmod(index, 3)
        cell = square[:, 16 * row:16 * row + 16, 16 * column:16 * column + 16]
        matches = [torch.equal(cell[:, top:top + 12, left:left + 12], tile)
                   for top in range(5) for left in range(5)]
        assert any(matches), f"tile {index} is not inside cell {index}"


def test_cut_tiles_rejects_oversized_tiles() -> None:
    with pytest.raises(ValueError):
        cut_tiles(torch.zeros(3, 30, 30, dtype=torch.uint8), 11, torch.Generator())
    with pytest.raises(ValueError):
        JigsawTask(view_size=30, tile_size=11)


def test_draw_names_the_order() -> None:
    task = JigsawTask(num_permutations=10)
    drawn = task.draw(np.zeros((32, 64, 3), dtype=np.uint8), torch.tensor(3))
    assert drawn.shape == (32, 64, 3) and drawn.any()


def test_trains(photos, trunk, batch_of, train) -> None:
    task = JigsawTask(view_size=48, tile_size=14, num_permutations=10, tile_dim=16, hidden_dim=32)
    curve = train(task, trunk, batch_of(task, photos), steps=30)
    assert curve.ratio < 0.5, curve
