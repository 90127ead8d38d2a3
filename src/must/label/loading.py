"""Feeding the labeler: decode and resize in DataLoader workers, so the teachers never wait.

Work is cut into shards (``images_per_shard`` consecutive dataset items) and each shard into
batches that never cross a shard boundary: every shard is labeled from the same batches whatever
the process count or resume point, so its bytes are the same too. A bad image does not stop a
worker: it comes back as an error record and the labeler decides (stop naming the file, or
``skip_bad``: record it in the manifest).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from must.data.geometry import Geometry
from must.data.readers import ComposedDataset, DataError
from must.data.readers.files import load_image


@dataclass(frozen=True)
class ShardPlan:
    index: int
    start: int
    """First dataset index; the shard covers ``[start, end)``."""
    end: int


def plan_shards(count: int, images_per_shard: int) -> list[ShardPlan]:
    """Shard ``i`` = dataset items ``[i * n, (i + 1) * n)``."""
    if images_per_shard < 1:
        raise ValueError(f"images_per_shard must be positive, got {images_per_shard}")
    return [ShardPlan(i, start, min(start + images_per_shard, count))
            for i, start in enumerate(range(0, count, images_per_shard))]


def shard_batches(shard: ShardPlan, batch_size: int) -> list[list[int]]:
    return [list(range(start, min(start + batch_size, shard.end)))
            for start in range(shard.start, shard.end, batch_size)]


class BatchPlan(Sampler[list[int]]):
    """The batches of the given shards, in order (a DataLoader ``batch_sampler``)."""

    def __init__(self, shards: Sequence[ShardPlan], batch_size: int) -> None:
        self.batches = [batch for shard in shards for batch in shard_batches(shard, batch_size)]

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


@dataclass
class LoadedImage:
    index: int
    key: str
    source_size: tuple[int, int] = (0, 0)
    images: dict[int, Tensor] = field(default_factory=dict)
    """Input size -> ``uint8 [3, S, S]`` (:meth:`Geometry.fit`: aspect ratio kept, padded)."""
    error: DataError | None = None


@dataclass
class LoadedBatch:
    indices: list[int]
    keys: list[str]
    source_sizes: list[tuple[int, int]]
    images: dict[int, Tensor]
    """Input size -> ``uint8 [B, 3, S, S]`` of the good images."""
    errors: list[LoadedImage]
    """Images that failed to load, in order."""

    def __len__(self) -> int:
        return len(self.keys)


class ResizedImages(Dataset[LoadedImage]):
    """Item ``i`` of a reader, decoded and fitted to every teacher's ``S x S`` input, aspect ratio
    kept and padded (the evaluation transform of :mod:`must.data.loader`: ``Geometry.fit``); the
    labeler maps predictions back with the same geometry (``Task.to_source_size``)."""

    def __init__(self, dataset: Dataset, sizes: Sequence[int]) -> None:
        # The reader's own skip_bad would serve the next item under the failed index: the
        # labeler must see the failure to record it (and never label an image under another key).
        self.dataset = copy.copy(dataset)
        if hasattr(self.dataset, "skip_bad"):
            self.dataset.skip_bad = False
        self.keys: list[str] = list(dataset.keys)  # type: ignore[attr-defined]
        self.sizes = sorted(set(sizes))

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, index: int) -> LoadedImage:
        key = self.keys[index]
        try:
            image = self._image(index)
        except DataError as error:
            return LoadedImage(index, key, error=error)
        source = (int(image.shape[-2]), int(image.shape[-1]))
        resized = {size: image if source == (size, size)
                   else Geometry.fit(source, (size, size)).warp_image(image)
                   for size in self.sizes}
        return LoadedImage(index, key, source, resized)

    def _image(self, index: int) -> Tensor:
        """File readers decode the image alone (their targets are not needed here)."""
        if isinstance(self.dataset, ComposedDataset):
            return load_image(self.dataset.path_of(index))
        return self.dataset[index].image


def collate_images(items: list[LoadedImage]) -> LoadedBatch:
    good = [item for item in items if item.error is None]
    sizes = good[0].images.keys() if good else ()
    return LoadedBatch(
        indices=[item.index for item in good], keys=[item.key for item in good],
        source_sizes=[item.source_size for item in good],
        images={size: torch.stack([item.images[size] for item in good]) for size in sizes},
        errors=[item for item in items if item.error is not None])


def make_image_loader(images: ResizedImages, shards: Sequence[ShardPlan], batch_size: int,
                      workers: int, pin_memory: bool = False) -> DataLoader:
    """Batches of ``shards`` in order; ``workers`` processes decode and resize ahead."""
    return DataLoader(images, batch_sampler=BatchPlan(shards, batch_size), num_workers=workers,
                      collate_fn=collate_images, pin_memory=pin_memory,
                      prefetch_factor=4 if workers > 0 else None,
                      persistent_workers=False)
