"""Deterministic, resumable batching over several datasets (MuST sec. 3.4: "we merge the datasets
and sample uniformly").

The training stream is a pure function of ``(seed, step)``: step ``s`` takes the next ``batch_size``
items of an endless sequence of epochs, each a permutation of the union of all datasets seeded by
``(seed, epoch)``. Every item carries its own augmentation seed derived from ``(seed, step,
position in the global batch)``, so the batches are the same whatever the number of DataLoader
workers or processes, and a run resumed at step ``s`` sees exactly what an uninterrupted run sees
from step ``s`` on. Under DDP each rank takes its contiguous slice of the global batch.
"""

from __future__ import annotations

import bisect
import functools
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from must import distributed
from must.config import ConfigError
from must.data.carry_errors import ErrorCarryingLoader
from must.data.geometry import Geometry
from must.data.sample import Batch, Sample
from must.tasks.base import Task, by_name
from must.tasks.self_supervised.base import SelfSupervisedTask

Index = tuple[int, int, int]
"""``(dataset_index, item_index, aug_seed)``: one item of a batch."""

Transform = Callable[[Sample, torch.Generator, int], Sample]
"""``transform(sample, generator, index)``: ``index`` is the item's position in the concatenation."""

_MASK64 = (1 << 64) - 1


def _splitmix64(value: int) -> int:
    """One round of SplitMix64 (Steele et al. 2014): a cheap, well-mixed 64-bit hash."""
    value = (value + 0x9E3779B97F4A7C15) & _MASK64
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & _MASK64
    return value ^ (value >> 31)


def derive_seed(*values: int) -> int:
    """A 63-bit seed from a tuple of integers (fits ``torch.Generator.manual_seed``)."""
    state = 0
    for value in values:
        state = _splitmix64(state ^ (value & _MASK64))
    return state >> 1


def _check_sizes(sizes: Sequence[int]) -> list[int]:
    sizes = [int(size) for size in sizes]
    if not sizes or any(size < 0 for size in sizes) or sum(sizes) == 0:
        raise ConfigError(f"need at least one non-empty dataset, got sizes {sizes}")
    return sizes


def _split_rank(batch_size: int, rank: int, world_size: int) -> int:
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside a world of {world_size} processes")
    if batch_size < world_size or batch_size % world_size:
        raise ConfigError(f"global batch size {batch_size} does not split evenly over {world_size} processes")
    return batch_size // world_size


class _Locator:
    """Maps a flat index over the concatenated datasets to ``(dataset_index, item_index)``."""

    def __init__(self, sizes: Sequence[int]) -> None:
        self.starts = [0]
        for size in sizes:
            self.starts.append(self.starts[-1] + size)
        self.total = self.starts[-1]

    def __call__(self, flat: int) -> tuple[int, int]:
        dataset = bisect.bisect_right(self.starts, flat) - 1
        return dataset, flat - self.starts[dataset]


class ResumableBatchSampler(Sampler[list[Index]]):
    """An endless stream of batches of ``(dataset_index, item_index, aug_seed)``, uniform over the
    union of datasets of the given ``sizes`` (MuST sec. 3.4).

    ``batch_size`` is the global batch; this rank yields its ``batch_size // world_size`` slice.
    With ``drop_last`` each epoch ends at its last full batch (the remainder of the permutation is
    skipped); without it the epochs are chained, so a batch may span two epochs and every item is
    seen exactly once per epoch. Iteration starts at ``start_step``.
    """

    def __init__(self, sizes: Sequence[int], batch_size: int, seed: int, rank: int = 0,
                 world_size: int = 1, start_step: int = 0, drop_last: bool = True) -> None:
        self.sizes = _check_sizes(sizes)
        self.locate = _Locator(self.sizes)
        self.batch_size = batch_size
        self.per_rank = _split_rank(batch_size, rank, world_size)
        if drop_last and batch_size > self.locate.total:
            raise ConfigError(f"batch size {batch_size} exceeds the {self.locate.total} items available")
        if start_step < 0:
            raise ValueError(f"start_step must be >= 0, got {start_step}")
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.start_step, self.drop_last = start_step, drop_last
        self._permutations: OrderedDict[int, list[int]] = OrderedDict()

    def permutation(self, epoch: int) -> list[int]:
        """The order of epoch ``epoch`` (cached: a batch spans at most two epochs)."""
        if epoch not in self._permutations:
            generator = torch.Generator().manual_seed(derive_seed(self.seed, epoch))
            self._permutations[epoch] = torch.randperm(self.locate.total, generator=generator).tolist()
            while len(self._permutations) > 2:
                self._permutations.popitem(last=False)
        return self._permutations[epoch]

    def global_batch(self, step: int) -> list[tuple[int, int]]:
        """The whole batch of ``step`` (every rank's part) as ``(dataset_index, item_index)``."""
        total, size = self.locate.total, self.batch_size
        if self.drop_last:
            epoch, index = divmod(step, total // size)
            flat = self.permutation(epoch)[index * size:(index + 1) * size]
        else:
            flat = []
            position = step * size
            while len(flat) < size:
                epoch, offset = divmod(position, total)
                chunk = self.permutation(epoch)[offset:offset + size - len(flat)]
                flat.extend(chunk)
                position += len(chunk)
        return [self.locate(index) for index in flat]

    def batch(self, step: int) -> list[Index]:
        """This rank's slice of the batch of ``step``, each item with its augmentation seed."""
        first = self.rank * self.per_rank
        items = self.global_batch(step)[first:first + self.per_rank]
        return [(dataset, item, derive_seed(self.seed, step, first + position))
                for position, (dataset, item) in enumerate(items)]

    def __iter__(self) -> Iterator[list[Index]]:
        step = self.start_step
        while True:
            yield self.batch(step)
            step += 1


class GroupedBatchSampler(ResumableBatchSampler):
    """Each global batch takes a fixed number of items from each group of datasets, uniform within
    the group (FixMatch's B labeled and mu B unlabeled images per step, Sohn et al. 2020 sec. 2.2,
    where sampling the union would give the labeled images the share of their count). ``groups``:
    ``[(dataset indices, items per global batch), ...]``; each group runs through its items epoch
    after epoch, every item once per epoch; each rank's slice holds every group's count divided by
    the world size."""

    def __init__(self, sizes: Sequence[int], groups: Sequence[tuple[Sequence[int], int]], batch_size: int,
                 seed: int, rank: int = 0, world_size: int = 1, start_step: int = 0) -> None:
        super().__init__(sizes, batch_size, seed, rank, world_size, start_step, drop_last=False)
        members = sorted(index for datasets, _ in groups for index in datasets)
        if members != list(range(len(self.sizes))):
            raise ConfigError(f"groups {list(groups)} must hold each of the {len(self.sizes)} datasets once")
        if sum(count for _, count in groups) != batch_size or any(count % world_size for _, count in groups):
            raise ConfigError(f"the groups' items per batch {[count for _, count in groups]} must add up to the "
                              f"batch size {batch_size}, each a multiple of the {world_size} processes")
        self.groups = [(list(datasets), count) for datasets, count in groups]
        self.streams = [ResumableBatchSampler([self.sizes[d] for d in datasets], count, derive_seed(seed, number),
                                              drop_last=False) for number, (datasets, count) in enumerate(groups, 1)]

    def global_batch(self, step: int) -> list[tuple[int, int]]:
        parts = [[(datasets[d], item) for d, item in stream.global_batch(step)]
                 for (datasets, _), stream in zip(self.groups, self.streams)]
        batch = []
        for rank in range(self.world_size):  # rank-major: every rank gets each group's share
            for items, (_, count) in zip(parts, self.groups):
                share = count // self.world_size
                batch.extend(items[rank * share:(rank + 1) * share])
        return batch


class ShardedBatchSampler(Sampler[list[Index]]):
    """Evaluation order: every item once, in order, rank ``r`` taking items ``r, r + W, ...``;
    batches of ``batch_size // world_size`` per rank, the last one possibly smaller (no drop)."""

    def __init__(self, sizes: Sequence[int], batch_size: int, rank: int = 0, world_size: int = 1) -> None:
        self.locate = _Locator(_check_sizes(sizes))
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside a world of {world_size} processes")
        self.per_rank = max(1, batch_size // world_size)
        self.indices = range(rank, self.locate.total, world_size)

    def __len__(self) -> int:
        return -(-len(self.indices) // self.per_rank)

    def __iter__(self) -> Iterator[list[Index]]:
        for start in range(0, len(self.indices), self.per_rank):
            yield [(*self.locate(flat), 0) for flat in self.indices[start:start + self.per_rank]]


class MixedDataset(Dataset[Sample]):
    """The concatenation of ``datasets``, indexed by ``(dataset_index, item_index, aug_seed)``;
    ``transform(sample, generator, index)`` gets a generator seeded with ``aug_seed`` and the
    item's position in the concatenation (a collision-free instance id)."""

    def __init__(self, datasets: Sequence[Dataset[Sample]], transform: Transform | None = None) -> None:
        self.datasets = list(datasets)
        self.transform = transform

    @property
    def sizes(self) -> list[int]:
        return [len(dataset) for dataset in self.datasets]  # type: ignore[arg-type]

    def __len__(self) -> int:
        return sum(self.sizes)

    def __getitem__(self, index: Index) -> Sample:
        dataset, item, seed = index
        sample = self.datasets[dataset][item]
        if self.transform is None:
            return sample
        position = sum(self.sizes[:dataset]) + item
        return self.transform(sample, torch.Generator().manual_seed(seed), position)


def _tasks_by_name(tasks: Sequence[Task] | Mapping[str, Task]) -> dict[str, Task]:
    return dict(tasks) if isinstance(tasks, Mapping) else by_name(list(tasks))


@dataclass(frozen=True)
class GeometricTransform:
    """Applies one geometry to the image and to every target of a known task (targets of other
    tasks are dropped). ``random`` draws scale jitter + crop + flip (MuST sec. 3.4 / supp.:
    scale jitter [0.5, 2.0]); otherwise (evaluation) the same geometry without its randomness,
    :meth:`Geometry.fit`: the aspect ratio kept, the image scaled to fit ``output_size`` and padded
    as training pads, so metrics are computed in the image's true geometry.

    Then every self-supervised task of ``tasks`` makes its views of the *source* image, not of the
    padded canvas (``task.sample_views(sample, generator, index)``, by default
    ``task.make_views(sample.image, generator, index)``, stored as its target;
    ``index``: the item's position in the datasets, PIRL's and exemplar's instance id): they need
    no label, so *every* image gets them. That is also what DDP needs: each rank's batch then holds
    every self-supervised task, so every rank joins their collectives (SimCLR's gather, PIRL's
    memory bank) at every step. All randomness comes from the item's generator: the views are a
    function of the augmentation seed, like the geometry."""

    tasks: Mapping[str, Task]
    output_size: tuple[int, int]
    random: bool
    scale_range: tuple[float, float] = (0.5, 2.0)
    flip: bool = True
    image_noise: Callable[[Tensor, torch.Generator], Tensor] | None = None
    """Photometric input noise applied after the geometry (Noisy Student's RandAugment); it
    changes pixel values only, so every target stays valid."""

    def __call__(self, sample: Sample, generator: torch.Generator, index: int | None = None) -> Sample:
        if self.random:
            geometry = Geometry.random(sample.size, self.output_size[0], generator, self.scale_range, self.flip)
        else:
            geometry = Geometry.fit(sample.size, self.output_size)
        targets = {name: self.tasks[name].transform_target(target, geometry)
                   for name, target in sample.targets.items() if name in self.tasks and target is not None}
        image = geometry.warp_image(sample.image)
        if self.image_noise is not None:
            image = self.image_noise(image, generator)
        for name, task in self.tasks.items():
            if isinstance(task, SelfSupervisedTask):
                targets[name] = task.sample_views(sample, generator, index)
        return Sample(sample.key, image, {name: value for name, value in targets.items() if value is not None})


def train_transform(tasks: Sequence[Task] | Mapping[str, Task], output_size: int,
                    scale_range: tuple[float, float] = (0.5, 2.0), flip: bool = True,
                    image_noise: Callable[[Tensor, torch.Generator], Tensor] | None = None) -> GeometricTransform:
    """Scale jitter, random ``output_size`` square crop and flip, shared by image and targets;
    then optional photometric ``image_noise``."""
    return GeometricTransform(_tasks_by_name(tasks), (output_size, output_size), True, scale_range, flip,
                              image_noise)


def eval_transform(tasks: Sequence[Task] | Mapping[str, Task],
                   output_size: int | tuple[int, int]) -> GeometricTransform:
    """Image and targets scaled to fit ``output_size`` (an int means a square), aspect ratio kept,
    padded at the bottom and right (:meth:`Geometry.fit`)."""
    size = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)
    return GeometricTransform(_tasks_by_name(tasks), size, False)  # type: ignore[arg-type]


def collate(samples: Sequence[Sample], tasks: Sequence[Task] | Mapping[str, Task]) -> Batch:
    """Images stacked as ``float`` in ``[0, 1]``; each task collated only when at least one image
    has its target (MuST sec. 3.4: an image may lack a task's label)."""
    images = torch.stack([sample.image for sample in samples]).float().div_(255.0)
    targets = {}
    for name, task in _tasks_by_name(tasks).items():
        values = [sample.targets.get(name) for sample in samples]
        if any(value is not None for value in values):
            targets[name] = task.collate(values)
    return Batch([sample.key for sample in samples], images, targets)


def _world(rank: int | None, world_size: int | None) -> tuple[int, int]:
    return (distributed.rank() if rank is None else rank,
            distributed.world_size() if world_size is None else world_size)


def _pinned(batches: Iterator[Batch], pin: bool) -> Iterator[Batch]:
    # DataLoader's pin-memory thread only pins tensors, tuples, mappings or objects with a
    # pin_memory() method; a Batch is none of these, so its images are pinned here.
    for batch in batches:
        if pin:
            batch.images = batch.images.pin_memory()
        yield batch


def make_loader(datasets: Sequence[Dataset[Sample]], tasks: Sequence[Task] | Mapping[str, Task],
                batch_size: int, seed: int, output_size: int, start_step: int = 0, workers: int = 0,
                *, scale_range: tuple[float, float] = (0.5, 2.0), flip: bool = True,
                drop_last: bool = True, rank: int | None = None, world_size: int | None = None,
                device: torch.device | None = None,
                image_noise: Callable[[Tensor, torch.Generator], Tensor] | None = None,
                groups: Sequence[tuple[Sequence[int], int]] | None = None) -> Iterator[Batch]:
    """The endless training stream from ``start_step`` on: this rank's part of each global batch
    of ``batch_size``, augmented by :func:`train_transform`. Rank and world size default to the
    running process group. ``groups``: a fixed number of items per batch from each group of
    datasets (:class:`GroupedBatchSampler`) instead of uniform sampling of their union."""
    rank, world_size = _world(rank, world_size)
    task_map = _tasks_by_name(tasks)
    dataset = MixedDataset(datasets, train_transform(task_map, output_size, scale_range, flip, image_noise))
    for task in task_map.values():
        if isinstance(task, SelfSupervisedTask):  # instance tasks: one slot per training image
            task.check_dataset_size(len(dataset))
    if groups is None:
        sampler = ResumableBatchSampler(dataset.sizes, batch_size, seed, rank, world_size, start_step, drop_last)
    else:
        sampler = GroupedBatchSampler(dataset.sizes, groups, batch_size, seed, rank, world_size, start_step)
    loader = ErrorCarryingLoader(  # a user error in a worker stays one line (carry_errors)
        dataset, batch_sampler=sampler, num_workers=workers,
        collate_fn=functools.partial(collate, tasks=task_map),
        persistent_workers=workers > 0,
        # A private generator: creating the iterator must not draw from the global torch RNG, or a
        # resumed run's random state would differ from an uninterrupted one's.
        generator=torch.Generator().manual_seed(seed),
    )
    return _pinned(iter(loader), distributed.pins_memory(device))


def make_eval_loader(datasets: Sequence[Dataset[Sample]], tasks: Sequence[Task] | Mapping[str, Task],
                     batch_size: int, output_size: int | tuple[int, int], workers: int = 0, *,
                     rank: int | None = None, world_size: int | None = None) -> DataLoader:
    """Every item once, in order, sharded over ranks, nothing dropped; :func:`eval_transform`.
    Re-iterable: iterate it once per evaluation."""
    rank, world_size = _world(rank, world_size)
    task_map = _tasks_by_name(tasks)
    dataset = MixedDataset(datasets, eval_transform(task_map, output_size))
    sampler = ShardedBatchSampler(dataset.sizes, batch_size, rank, world_size)
    return ErrorCarryingLoader(dataset, batch_sampler=sampler, num_workers=workers,
                               collate_fn=functools.partial(collate, tasks=task_map),
                               generator=torch.Generator().manual_seed(0))
