"""``to_pseudo_labels`` (one batched operation) == ``to_pseudo_label`` image by image, for every
task that overrides it, including batches it cannot stack (maps of different sizes)."""

from __future__ import annotations

import pytest
import torch

from must.tasks import build_task
from must.tasks.base import stack_uniform


def _predictions(task_name: str, sizes: list[tuple[int, int]]) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    if task_name == "classification":
        return [torch.rand(6, generator=generator).softmax(0) for _ in sizes]
    if task_name == "segmentation":
        return [torch.rand(5, *size, generator=generator).mul(4).softmax(0).half() for size in sizes]
    return [torch.rand(*size, generator=generator) + 0.1 for size in sizes]


CASES = [
    ("classification", {"num_classes": 6}, None),
    ("classification", {"num_classes": 6, "top_k": 2}, None),
    ("classification", {"num_classes": 5, "background_class": True}, None),
    ("segmentation", {"num_classes": 5}, None),
    ("segmentation", {"num_classes": 5}, 0.35),
    ("depth", {}, None),
]


@pytest.mark.parametrize("task_name,options,threshold", CASES)
@pytest.mark.parametrize("sizes", [[(8, 8)] * 4, [(8, 8), (6, 10), (8, 8)]], ids=["stacked", "mixed"])
def test_batched_equals_one_by_one(task_name: str, options: dict, threshold: float | None,
                                   sizes: list[tuple[int, int]]) -> None:
    task = build_task(task_name, **options)
    predictions = _predictions(task_name, sizes)
    if task_name == "classification" and options.get("background_class"):
        predictions = [torch.cat([p, torch.tensor([0.3])]) for p in predictions]
    batched = task.to_pseudo_labels(predictions, threshold)
    one_by_one = [task.to_pseudo_label(p, threshold) for p in predictions]
    assert len(batched) == len(one_by_one)
    for ours, reference in zip(batched, one_by_one):
        assert ours.dtype == reference.dtype and ours.shape == reference.shape
        torch.testing.assert_close(ours, reference)


def test_segmentation_threshold_really_ignores_pixels() -> None:
    """The equality above would also hold if no pixel were ever ignored: check some are."""
    task = build_task("segmentation", num_classes=5)
    labels = task.to_pseudo_labels(_predictions("segmentation", [(8, 8)] * 2), 0.6)
    ignored = torch.stack(labels).eq(255).float().mean()
    assert 0.0 < ignored < 1.0


def test_stack_uniform_refuses_mixed_shapes_and_non_tensors() -> None:
    assert stack_uniform([torch.zeros(2), torch.zeros(3)]) is None
    assert stack_uniform([{"boxes": torch.zeros(0, 4)}]) is None
    assert stack_uniform([]) is None
    assert stack_uniform([torch.zeros(2), torch.ones(2)]).shape == (2, 2)
