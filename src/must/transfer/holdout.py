"""A validation split held out of a training set, for downstream sets that ship only train and test
(CIFAR, Fashion-MNIST): the grid search must choose on data that is neither trained on nor the
test set (MuST supp. sec. 2.3 picks each model's best cell; choosing it on test would flatter it).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from must.config import ConfigError
from must.data.loader import derive_seed
from must.data.readers import ReaderDataset
from must.data.sample import Sample


class SampleSubset(ReaderDataset):
    """Items ``indices`` of ``parent`` with the parent's reader interface (``keys``, ``classes``,
    ``tasks``), so stages that read class names from a dataset work on the subset unchanged."""

    def __init__(self, parent: ReaderDataset, indices: Sequence[int], part: str) -> None:
        super().__init__(f"{parent.name}[{part}]", parent.tasks, parent.classes)
        if any(not 0 <= index < len(parent) for index in indices):
            raise IndexError(f"{parent.name}: subset index out of range for {len(parent)} items")
        self.parent = parent
        self.indices = [int(index) for index in indices]
        self.keys = [parent.keys[index] for index in self.indices]

    def _load(self, index: int) -> Sample:
        return self.parent[self.indices[index]]


def hold_out(dataset: ReaderDataset, fraction: float, seed: int,
             limit: int | None = None) -> tuple[SampleSubset, SampleSubset]:
    """``(train, val)``: a seeded random ``fraction`` of ``dataset`` (at most ``limit`` items) as
    val, the rest as train; both keep dataset order. The same seed gives the same split in every
    process. With ``limit`` the held-out surplus is dropped rather than trained on, so the
    training set does not depend on ``limit``."""
    count = len(dataset)
    held = round(count * fraction)
    if not 0 < held < count:
        raise ConfigError(f"{dataset.name}: holding out {fraction:.0%} of {count} items leaves an empty "
                         "train or val split")
    generator = torch.Generator().manual_seed(derive_seed(seed, count))
    order = torch.randperm(count, generator=generator)
    val = sorted(order[:held].tolist())
    train = sorted(order[held:].tolist())
    if limit is not None:
        val = sorted(order[:min(held, limit)].tolist())
    return SampleSubset(dataset, train, "train"), SampleSubset(dataset, val, "val")
