"""Rotation: each view is the image turned by its label's quarter turns; training."""

import numpy as np
import pytest
import torch

from must.tasks.self_supervised.base import resize_square
from must.tasks.self_supervised.rotation import RotationTask, rotate


def test_rotation_is_counter_clockwise() -> None:
    image = torch.tensor([[0, 1], [2, 3]])
    assert rotate(image, 1).tolist() == [[1, 3], [0, 2]]  # the top-right corner moves to the top-left
    assert torch.equal(rotate(rotate(image, 1), 3), image)


def test_labels_match_the_rotation(photos: list[torch.Tensor]) -> None:
    task = RotationTask(view_size=32)
    views = task.make_views(photos[0], torch.Generator().manual_seed(0))
    assert views["labels"].tolist() == [0, 1, 2, 3]
    upright = resize_square(photos[0], 32)
    for image, label in zip(views["images"], views["labels"]):
        assert torch.equal(image, rotate(upright, int(label)))
        assert torch.equal(rotate(image, -int(label)), upright)


@pytest.mark.parametrize("seed", range(4))
def test_one_random_rotation(photos: list[torch.Tensor], seed: int) -> None:
    task = RotationTask(view_size=32, all_rotations=False)
    views = task.make_views(photos[1], torch.Generator().manual_seed(seed))
    assert views["images"].shape == (1, 3, 32, 32)
    assert torch.equal(views["images"][0], rotate(resize_square(photos[1], 32), int(views["labels"][0])))


def test_draw_turns_the_image_back() -> None:
    image = np.zeros((16, 16, 3), dtype=np.uint8)
    image[-1, 0] = 255  # bottom-left corner; a 90-degree view has it at the bottom-right
    view = np.ascontiguousarray(np.rot90(image, 1))
    drawn = RotationTask().draw(view, torch.tensor(1))
    assert drawn[-1, 0].tolist() == [255, 255, 255]


def test_trains(photos, trunk, batch_of, train) -> None:
    task = RotationTask(view_size=32, hidden_dim=32)
    curve = train(task, trunk, batch_of(task, photos), steps=30)
    assert curve.ratio < 0.5, curve
