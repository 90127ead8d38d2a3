"""The held-out validation split: disjoint from train, deterministic by seed, capped by limit, and
keeping the reader interface (keys, classes) the stages read."""

from __future__ import annotations

import pytest
import torch

from must.data.readers import ReaderDataset
from must.data.sample import Sample
from must.transfer.holdout import SampleSubset, hold_out


class Numbers(ReaderDataset):
    def __init__(self, count: int) -> None:
        super().__init__("numbers", ("classification",), {"classification": ["even", "odd"]})
        self.keys = [f"n{i}" for i in range(count)]

    def _load(self, index: int) -> Sample:
        return Sample(self.keys[index], torch.zeros(3, 4, 4, dtype=torch.uint8),
                      {"classification": torch.tensor(index % 2)})


def test_split_is_disjoint_complete_and_seeded() -> None:
    data = Numbers(50)
    train, val = hold_out(data, 0.2, seed=3)
    assert len(val) == 10 and len(train) == 40
    assert set(train.keys).isdisjoint(val.keys) and set(train.keys) | set(val.keys) == set(data.keys)
    again_train, again_val = hold_out(data, 0.2, seed=3)
    assert again_val.keys == val.keys and again_train.keys == train.keys
    assert hold_out(data, 0.2, seed=4)[1].keys != val.keys
    assert val.indices == sorted(val.indices)


def test_limit_caps_val_without_changing_train() -> None:
    data = Numbers(50)
    train, val = hold_out(data, 0.2, seed=3, limit=4)
    full_train, full_val = hold_out(data, 0.2, seed=3)
    assert len(val) == 4 and set(val.keys) <= set(full_val.keys)
    assert train.keys == full_train.keys


def test_subset_keeps_the_reader_interface() -> None:
    data = Numbers(10)
    subset = SampleSubset(data, [7, 2], "part")
    assert subset.classes == data.classes and subset.tasks == data.tasks
    assert subset.keys == ["n7", "n2"] and len(subset) == 2
    assert subset[0].key == "n7" and int(subset[1].targets["classification"]) == 0
    with pytest.raises(IndexError):
        SampleSubset(data, [10], "bad")


def test_empty_split_is_refused() -> None:
    with pytest.raises(ValueError, match="empty"):
        hold_out(Numbers(3), 0.1, seed=0)
