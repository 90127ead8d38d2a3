"""The resumable sampler and loader: uniform over the union of datasets, rank shards that partition
the global batch, resumption equal to the tail of the full stream, augmentation independent of
the worker count, image and dense targets warped together, collation of partial labels."""

from __future__ import annotations

import itertools
from collections import Counter
from typing import Any

import pytest
import torch

from must.data.geometry import Geometry
from must.data.loader import (ResumableBatchSampler, ShardedBatchSampler, collate, derive_seed,
                              eval_transform, make_eval_loader, make_loader, train_transform)
from must.data.sample import IGNORE_INDEX, Sample, TaskBatch, stack_with_fill
from must.tasks import DepthTask, DetectionTask, NormalsTask, SegmentationTask
from must.tasks.base import Task


class ShadeTask(Task):
    """A dense toy task: the target is the image's first channel as a float map, warped like the
    image, so after any augmentation target == image[0] (up to uint8 rounding)."""

    name = "shade"
    primary_metric = "mae"

    def build_head(self, spec: Any) -> Any: raise NotImplementedError
    def loss(self, output: Any, target: TaskBatch) -> Any: raise NotImplementedError
    def predict(self, output: Any) -> Any: raise NotImplementedError
    def to_pseudo_label(self, prediction: Any, threshold: float | None = None) -> Any: raise NotImplementedError
    def metric(self) -> Any: raise NotImplementedError
    def draw(self, image: Any, prediction: Any) -> Any: raise NotImplementedError

    def transform_target(self, target: torch.Tensor, geometry: Geometry) -> torch.Tensor:
        return geometry.warp_dense(target, mode="bilinear")

    def collate(self, targets: list[torch.Tensor | None]) -> TaskBatch:
        return stack_with_fill(targets, fill=-1.0)


class LabelTask(ShadeTask):
    """An image-level toy label (unchanged by geometry)."""

    name = "label"

    def transform_target(self, target: torch.Tensor, geometry: Geometry) -> torch.Tensor:
        return target

    def collate(self, targets: list[torch.Tensor | None]) -> TaskBatch:
        return stack_with_fill(targets, fill=0, like=torch.tensor(0))


class ToyDataset(torch.utils.data.Dataset):
    """``count`` random images of varied sizes; ``label`` only on even items, plus a target for a
    task no one asked for (it must be dropped)."""

    def __init__(self, count: int, seed: int) -> None:
        self.count, self.seed = count, seed

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> Sample:
        generator = torch.Generator().manual_seed(self.seed * 1000 + index)
        height, width = 10 + index % 5, 12 + index % 3
        image = torch.randint(0, 256, (3, height, width), generator=generator, dtype=torch.uint8)
        targets: dict[str, Any] = {"shade": image[0].float(), "unknown": torch.zeros(2)}
        if index % 2 == 0:
            targets["label"] = torch.tensor(self.seed * 1000 + index)
        return Sample(f"{self.seed}/{index}", image, targets)


TASKS = [ShadeTask(), LabelTask()]


def test_derive_seed_is_deterministic_and_spread() -> None:
    seeds = {derive_seed(0, step, position) for step in range(50) for position in range(20)}
    assert len(seeds) == 1000 and all(0 <= s < 2**63 for s in seeds)
    assert derive_seed(1, 2, 3) == derive_seed(1, 2, 3) != derive_seed(1, 3, 2)


def test_uniform_over_union_each_item_once_per_epoch() -> None:
    sizes = [10, 30, 60]
    sampler = ResumableBatchSampler(sizes, batch_size=20, seed=3)
    items = [(d, i) for batch in itertools.islice(sampler, 50) for d, i, _ in batch]  # 10 epochs
    counts = Counter(items)
    assert set(counts) == {(d, i) for d, size in enumerate(sizes) for i in range(size)}
    assert set(counts.values()) == {10}
    per_dataset = Counter(d for d, _ in items)
    assert [per_dataset[d] for d in range(3)] == [100, 300, 600]  # proportional to size: uniform over items


def test_drop_last_skips_the_remainder_and_epochs_differ() -> None:
    sampler = ResumableBatchSampler([7, 6], batch_size=4, seed=0)  # 13 items: 3 batches per epoch
    epoch0 = [item[:2] for batch in itertools.islice(sampler, 3) for item in batch]
    epoch1 = [item[:2] for batch in itertools.islice(iter(sampler), 3, 6) for item in batch]
    assert len(set(epoch0)) == 12 and len(set(epoch1)) == 12
    assert epoch0 != epoch1


def test_without_drop_last_batches_span_epochs() -> None:
    sampler = ResumableBatchSampler([5, 2], batch_size=3, seed=1, drop_last=False)
    flat = [item[:2] for batch in itertools.islice(sampler, 7) for item in batch]  # 21 = 3 epochs of 7
    for epoch in range(3):
        assert len(set(flat[epoch * 7:(epoch + 1) * 7])) == 7


def test_rank_shards_are_disjoint_and_union_to_the_global_batch() -> None:
    whole = ResumableBatchSampler([13, 19], batch_size=8, seed=5)
    ranks = [ResumableBatchSampler([13, 19], batch_size=8, seed=5, rank=r, world_size=4) for r in range(4)]
    for step in range(12):
        parts = [sampler.batch(step) for sampler in ranks]
        assert all(len(part) == 2 for part in parts)
        assert sum(parts, []) == whole.batch(step)  # same items, same augmentation seeds
        assert len({item[:2] for part in parts for item in part}) == 8


def test_uneven_split_is_refused() -> None:
    with pytest.raises(ValueError, match="does not split evenly"):
        ResumableBatchSampler([10], batch_size=6, seed=0, rank=0, world_size=4)
    with pytest.raises(ValueError, match="non-empty"):
        ResumableBatchSampler([0, 0], batch_size=2, seed=0)


@pytest.mark.parametrize("drop_last", [True, False])
def test_resume_equals_the_tail_of_the_full_stream(drop_last: bool) -> None:
    full = list(itertools.islice(ResumableBatchSampler([9, 4], 4, seed=2, drop_last=drop_last), 20))
    resumed = list(itertools.islice(
        ResumableBatchSampler([9, 4], 4, seed=2, start_step=13, drop_last=drop_last), 7))
    assert resumed == full[13:]


def _assert_same_batches(first: list, second: list) -> None:
    assert len(first) == len(second)
    for a, b in zip(first, second):
        assert a.keys == b.keys
        assert torch.equal(a.images, b.images)
        assert a.targets.keys() == b.targets.keys()
        for name in a.targets:
            assert torch.equal(a.targets[name].present, b.targets[name].present)
            assert torch.equal(a.targets[name].value, b.targets[name].value)


def test_loader_resume_and_worker_count_give_identical_batches() -> None:
    datasets = [ToyDataset(11, seed=1), ToyDataset(7, seed=2)]
    common = dict(batch_size=4, seed=9, output_size=16, rank=0, world_size=1)
    full = list(itertools.islice(make_loader(datasets, TASKS, workers=0, **common), 8))
    resumed = list(itertools.islice(make_loader(datasets, TASKS, start_step=5, workers=0, **common), 3))
    _assert_same_batches(resumed, full[5:])
    stream = make_loader(datasets, TASKS, workers=2, **common)
    with_workers = list(itertools.islice(stream, 8))
    stream.close()
    _assert_same_batches(with_workers, full)


def test_augmentation_moves_dense_targets_with_the_image_and_varies() -> None:
    transform = train_transform(TASKS, output_size=16)
    sample = ToyDataset(5, seed=3)[2]
    outputs = [transform(sample, torch.Generator().manual_seed(seed)) for seed in range(6)]
    for out in outputs:
        assert out.image.shape == (3, 16, 16) and out.image.dtype == torch.uint8
        assert set(out.targets) == {"shade", "label"}  # the unknown task's target is dropped
        assert (out.targets["shade"] - out.image[0].float()).abs().max() <= 1.0  # aligned
        assert torch.equal(out.targets["label"], sample.targets["label"])
    assert len({out.image.float().sum().item() for out in outputs}) > 1  # the draws differ


def test_collate_partial_labels() -> None:
    transform = train_transform(TASKS, output_size=8)
    samples = [transform(ToyDataset(4, seed=0)[i], torch.Generator().manual_seed(i)) for i in (1, 2, 3)]
    batch = collate(samples, TASKS)
    assert batch.images.dtype == torch.float32 and batch.images.shape == (3, 3, 8, 8)
    assert torch.allclose(batch.images[0] * 255, samples[0].image.float())
    assert batch.targets["label"].present.tolist() == [False, True, False]
    assert batch.targets["label"].value.tolist() == [0, 2, 0]
    only_odd = collate([samples[0], samples[2]], TASKS)
    assert "label" not in only_odd.targets and "shade" in only_odd.targets


def test_eval_sampler_covers_every_item_once_without_drop() -> None:
    shards = [list(ShardedBatchSampler([5, 6], batch_size=4, rank=r, world_size=2)) for r in range(2)]
    items = [item[:2] for shard in shards for batch in shard for item in batch]
    assert sorted(items) == [(0, i) for i in range(5)] + [(1, i) for i in range(6)]
    assert [len(batch) for batch in shards[0]] == [2, 2, 2] and [len(b) for b in shards[1]] == [2, 2, 1]
    assert len(ShardedBatchSampler([5, 6], batch_size=4, rank=1, world_size=2)) == 3


def test_eval_loader_resizes_and_is_reiterable() -> None:
    loader = make_eval_loader([ToyDataset(5, seed=4)], TASKS, batch_size=2, output_size=(8, 10),
                              rank=0, world_size=1)
    first, second = list(loader), list(loader)
    _assert_same_batches(first, second)
    assert [len(batch) for batch in first] == [2, 2, 1]
    assert first[0].images.shape == (2, 3, 8, 10) and first[0].keys == ["4/0", "4/1"]


def _wide_scene() -> Sample:
    """A 40x80 image (twice as wide as high) with one 40x20 object at x 20..60, y 10..30: its box,
    its segmentation mask (class 3), flat depth 2 and normals facing the camera."""
    image = torch.full((3, 40, 80), 60, dtype=torch.uint8)
    image[:, 10:30, 20:60] = 200
    mask = torch.zeros(40, 80, dtype=torch.long)
    mask[10:30, 20:60] = 3
    normals = torch.zeros(3, 40, 80)
    normals[2] = 1.0
    detection = {"boxes": torch.tensor([[20.0, 10.0, 60.0, 30.0]]), "labels": torch.tensor([1])}
    return Sample("wide", image, {"detection": detection, "segmentation": mask,
                                  "depth": torch.full((40, 80), 2.0), "normals": normals})


def test_evaluation_keeps_the_aspect_ratio_and_pads_like_training() -> None:
    tasks = [DetectionTask(num_classes=2), SegmentationTask(num_classes=4), DepthTask(), NormalsTask()]
    sample = eval_transform(tasks, 32)(_wide_scene(), torch.Generator())
    # scaled by 0.4 on both axes (not 0.8 vertically): the image fills rows 0..16, padding below
    assert sample.image.shape == (3, 32, 32)
    assert (sample.image[:, 16:] == 0).all() and (sample.image[:, :16] > 0).all()
    boxes = sample.targets["detection"]["boxes"]
    assert boxes.tolist() == [[8.0, 4.0, 24.0, 12.0]]
    expected = torch.full((32, 32), IGNORE_INDEX, dtype=torch.long)
    expected[:16] = 0
    expected[4:12, 8:24] = 3
    assert torch.equal(sample.targets["segmentation"], expected)
    assert (sample.targets["depth"][:16] == 2.0).all() and (sample.targets["depth"][16:] == 0).all()
    assert (sample.targets["normals"][:, 16:] == 0).all() and (sample.targets["normals"][2, :16] == 1).all()
    # and back: the evaluation geometry maps the box to the source exactly
    geometry = Geometry.fit(_wide_scene().size, (32, 32))
    assert geometry.unwarp_boxes(boxes).tolist() == [[20.0, 10.0, 60.0, 30.0]]


def test_evaluation_of_a_square_image_is_the_plain_resize() -> None:
    """Square images (the world's, Fashion-MNIST's) are evaluated exactly as before."""
    scene = _wide_scene()
    square = Sample("square", scene.image[:, :, 20:60], {"segmentation": scene.targets["segmentation"][:, 20:60]})
    task = SegmentationTask(num_classes=4)
    for size in (28, 32, 64):
        plain = Geometry.resize_to(square.size, (size, size))
        sample = eval_transform([task], size)(square, torch.Generator())
        assert torch.equal(sample.image, plain.warp_image(square.image))
        assert torch.equal(sample.targets["segmentation"],
                           task.transform_target(square.targets["segmentation"], plain))


def test_grouped_batches_hold_each_groups_share_and_every_item_once_per_epoch() -> None:
    """FixMatch's B labeled + mu B unlabeled images per step (mu = 3): 2 of the 4-item labeled
    dataset and 6 of the 12 + 6 unlabeled items per global batch of 8, each rank's half holding
    1 labeled and 3 unlabeled; each group goes through all its items once per epoch."""
    from must.data.loader import GroupedBatchSampler

    groups = [([0], 2), ([1, 2], 6)]
    sampler = GroupedBatchSampler([4, 12, 6], groups, 8, seed=1)
    labeled, unlabeled = [], []
    for step in range(9):  # 3 unlabeled epochs (18 items, 6 per batch), 4.5 labeled epochs
        batch = sampler.global_batch(step)
        labeled += [item for item in batch if item[0] == 0]
        unlabeled += [item for item in batch if item[0] != 0]
        assert len(batch) == 8
    for epoch in range(3):
        assert sorted(labeled[epoch * 4:(epoch + 1) * 4]) == [(0, i) for i in range(4)]
        assert sorted(unlabeled[epoch * 18:(epoch + 1) * 18]) == sorted(
            [(1, i) for i in range(12)] + [(2, i) for i in range(6)])
    for rank in range(2):
        part = GroupedBatchSampler([4, 12, 6], groups, 8, seed=1, rank=rank, world_size=2).batch(0)
        assert [dataset == 0 for dataset, _, _ in part] == [True, False, False, False]
    resumed = GroupedBatchSampler([4, 12, 6], groups, 8, seed=1, start_step=5)
    assert next(iter(resumed)) == sampler.batch(5)


def test_grouped_batches_refuse_shares_that_do_not_fit() -> None:
    from must.config import ConfigError
    from must.data.loader import GroupedBatchSampler

    with pytest.raises(ConfigError, match="add up"):
        GroupedBatchSampler([4, 12], [([0], 2), ([1], 5)], 8, seed=1)
    with pytest.raises(ConfigError, match="once"):
        GroupedBatchSampler([4, 12], [([0], 2), ([0], 6)], 8, seed=1)
