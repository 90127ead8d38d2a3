"""Exemplar: one surrogate class per image (its dataset index), several transformed views,
training."""

import pytest
import torch

from must.tasks.self_supervised.base import instance_index
from must.tasks.self_supervised.exemplar import ExemplarTask


def test_instance_index_is_the_dataset_index() -> None:
    assert instance_index(999, 1000, "exemplar", "num_instances") == 999
    with pytest.raises(ValueError, match="dataset index"):
        instance_index(None, 10, "exemplar", "num_instances")
    with pytest.raises(ValueError, match="num_instances=10"):
        instance_index(10, 10, "exemplar", "num_instances")


def test_views(photos: list[torch.Tensor]) -> None:
    task = ExemplarTask(view_size=32, num_instances=100, views_per_image=3)
    views = task.make_views(photos[0], torch.Generator().manual_seed(0), index=7)
    assert views["images"].shape == (3, 3, 32, 32)
    assert int(views["instance"]) == 7
    assert not torch.equal(views["images"][0], views["images"][1])
    with pytest.raises(ValueError):
        task.make_views(photos[0], torch.Generator())


def test_every_view_is_labelled_with_its_image(photos, trunk, batch_of) -> None:
    task = ExemplarTask(view_size=32, num_instances=16, views_per_image=2, hidden_dim=16)
    batch = batch_of(task, photos)
    output = task.forward_views(task.build_head(trunk.spec), trunk.features, batch)
    assert output["logits"].shape == (8, 16)
    expected = [i for i in range(4) for _ in range(2)]
    assert output["labels"].tolist() == expected


def test_trains(photos, trunk, batch_of, train) -> None:
    task = ExemplarTask(view_size=32, num_instances=16, hidden_dim=32)
    curve = train(task, trunk, batch_of(task, photos), steps=30)
    assert curve.ratio < 0.5, curve
