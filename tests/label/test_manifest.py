"""Per-task statistics against hand-computed values; merging is order-independent in what it
sums; the manifest round-trips and refuses other format versions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from must.data.sample import IGNORE_INDEX
from must.label.manifest import (MANIFEST_NAME, Manifest, ShardRecord, SkippedImage, TeacherEntry,
                                 add_to_sums, merge_sums, new_sums, read_manifest, summarize,
                                 write_manifest)


def test_classification_statistics() -> None:
    sums = new_sums("classification", 3)
    add_to_sums(sums, "classification", [torch.tensor([0.5, 0.5, 0.0]), torch.tensor([0.1, 0.2, 0.7])])
    summary = summarize("classification", sums)
    assert summary["mean_max_probability"] == pytest.approx(0.6)
    entropy = -(0.5 * torch.log(torch.tensor(0.5)) * 2) + -(torch.tensor([0.1, 0.2, 0.7]) *
                                                              torch.tensor([0.1, 0.2, 0.7]).log()).sum()
    assert summary["mean_entropy"] == pytest.approx(float(entropy) / 2, rel=1e-5)
    assert summary["argmax_counts"] == [1, 0, 1]


@pytest.mark.parametrize("task", ["classification", "detection", "segmentation", "depth"])
def test_one_batch_sums_to_the_same_as_image_by_image(task: str) -> None:
    generator = torch.Generator().manual_seed(0)

    def label(index: int):
        if task == "classification":
            return torch.rand(5, generator=generator).softmax(0)
        if task == "detection":
            count = index % 3
            return {"boxes": torch.rand(count, 4, generator=generator),
                    "labels": torch.randint(0, 7, (count,), generator=generator),  # beyond 5 classes
                    "scores": torch.rand(count, generator=generator)}
        if task == "segmentation":
            ignored = torch.rand(4, 5, generator=generator) < 0.2
            return torch.randint(0, 6, (4, 5), generator=generator).masked_fill(ignored, IGNORE_INDEX)
        return torch.rand(4, 5, generator=generator)

    labels = [label(index) for index in range(6)]
    batched, single = new_sums(task, 5), new_sums(task, 5)
    add_to_sums(batched, task, labels)
    add_to_sums(batched, task, [])
    for target in labels:
        add_to_sums(single, task, [target])
    assert batched.keys() == single.keys()
    for name, value in batched.items():
        assert value == pytest.approx(single[name], rel=1e-5), name


def test_detection_segmentation_and_depth_statistics() -> None:
    detection = new_sums("detection", 2)
    add_to_sums(detection, "detection", [{"boxes": torch.zeros(3, 4), "labels": torch.tensor([0, 1, 1]),
                                          "scores": torch.tensor([0.5, 0.75, 1.0])}])
    add_to_sums(detection, "detection", [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long),
                                          "scores": torch.zeros(0)}])
    summary = summarize("detection", detection)
    assert summary["mean_boxes_per_image"] == 1.5 and summary["fraction_images_with_boxes"] == 0.5
    assert summary["mean_score"] == pytest.approx(0.75) and summary["label_counts"] == [1, 2]

    segmentation = new_sums("segmentation", 3)
    add_to_sums(segmentation, "segmentation", [torch.tensor([[0, 2], [IGNORE_INDEX, 2]])])
    summary = summarize("segmentation", segmentation)
    assert summary["ignored_pixel_fraction"] == 0.25
    assert summary["class_pixel_fractions"] == [0.25, 0.0, 0.5]

    depth = new_sums("depth", None)
    add_to_sums(depth, "depth", [torch.tensor([[1.0, 3.0]])])
    add_to_sums(depth, "depth", [torch.tensor([[5.0, float("inf")]])])
    assert summarize("depth", depth) == {"images": 2, "mean": 3.0, "min": 1.0, "max": 5.0}
    assert summarize("depth", new_sums("depth", None))["mean"] is None


def test_merge_adds_parts() -> None:
    parts = []
    for values in ([1.0, 2.0], [7.0]):
        sums = new_sums("depth", None)
        add_to_sums(sums, "depth", [torch.tensor(values)])
        parts.append(sums)
    merged = merge_sums(merge_sums(new_sums("depth", None), parts[0]), parts[1])
    assert merged == {"images": 2, "values": 3, "sum": 10.0, "min": 1.0, "max": 7.0}
    first, second = new_sums("detection", 1), new_sums("detection", 1)
    add_to_sums(second, "detection", [{"boxes": torch.zeros(1, 4), "labels": torch.tensor([3])}])
    assert merge_sums(first, second)["label_counts"] == [0, 0, 0, 1]  # a class beyond the known count


def test_round_trip_and_version_check(tmp_path: Path) -> None:
    manifest = Manifest(
        teachers=[TeacherEntry("t", "depth", "must", 32, checkpoint="c.pt", checkpoint_sha256="ab")],
        data={"format": "folder", "root": "/x"}, images_per_shard=10,
        counts={"dataset_images": 1, "labeled": 1, "skipped": 0, "shards": 1},
        shards=[ShardRecord("shard-000000.tar", "cd", 1024, 1, 0, 1)],
        statistics={"depth": {"images": 1}}, skipped=[SkippedImage("k", "/x/k.png", "broken", None)])
    write_manifest(manifest, tmp_path)
    assert read_manifest(tmp_path) == manifest
    assert read_manifest(tmp_path).teacher_for("depth").checkpoint_sha256 == "ab"
    data = json.loads((tmp_path / MANIFEST_NAME).read_text())
    data["format_version"] = 99
    (tmp_path / MANIFEST_NAME).write_text(json.dumps(data))
    with pytest.raises(ValueError, match="format 99"):
        read_manifest(tmp_path)
