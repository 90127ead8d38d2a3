"""Relative position: the label names where the second patch lies, the patches are the crops at
the recorded corners, training."""

import pytest
import torch

from must.tasks.self_supervised.base import resize_square
from must.tasks.self_supervised.relative_position import NEIGHBOURS, RelativePositionTask, label_of


def test_label_layout() -> None:
    assert label_of((-1, -1)) == 0 and label_of((-1, 1)) == 2 and label_of((0, -1)) == 3
    assert label_of((0, 1)) == 4 and label_of((1, 0)) == 6 and label_of((1, 1)) == 7
    assert (0, 0) not in NEIGHBOURS


@pytest.mark.parametrize("seed", range(12))
def test_label_matches_patch_offsets(photos: list[torch.Tensor], seed: int) -> None:
    task = RelativePositionTask(view_size=64, patch_size=14, gap=4, jitter=2)
    views = task.make_views(photos[seed % 4], torch.Generator().manual_seed(seed))
    (top, left), (other_top, other_left) = views["corners"].tolist()
    row_step = round((other_top - top) / task.spacing)
    column_step = round((other_left - left) / task.spacing)
    assert NEIGHBOURS[int(views["label"])] == (row_step, column_step)
    # The jitter never makes the offset ambiguous: within 2 * jitter of the grid spacing.
    assert abs(other_top - top - row_step * task.spacing) <= 2 * task.jitter
    square = resize_square(photos[seed % 4], 64)  # square photos: the whole photo
    for patch, (y, x) in zip(views["patches"], views["corners"].tolist()):
        assert 0 <= y and y + 14 <= 64 and 0 <= x and x + 14 <= 64
        assert torch.equal(patch, square[:, y:y + 14, x:x + 14])


def test_every_label_occurs(photos: list[torch.Tensor]) -> None:
    task = RelativePositionTask(view_size=64, patch_size=14, gap=4, jitter=2)
    generator = torch.Generator().manual_seed(0)
    labels = {int(task.make_views(photos[0], generator)["label"]) for _ in range(80)}
    assert labels == set(range(8))


def test_rejects_layouts_that_do_not_fit() -> None:
    with pytest.raises(ValueError, match="fit"):
        RelativePositionTask(view_size=40, patch_size=14, gap=2, jitter=1)
    with pytest.raises(ValueError, match="jitter"):
        RelativePositionTask(view_size=96, patch_size=10, gap=0, jitter=5)


def test_trains(photos, trunk, batch_of, train) -> None:
    task = RelativePositionTask(view_size=48, patch_size=14, gap=2, jitter=1, embedding_dim=16, hidden_dim=32)
    curve = train(task, trunk, batch_of(task, photos), steps=30)
    assert curve.ratio < 0.5, curve


def test_default_gap_and_jitter_are_the_papers_scaled_to_the_patch() -> None:
    """Doersch et al. sec. 3.1: gap half a patch, jitter 7 pixels on 96-pixel patches; at that
    size the layout is the paper's, at the default size both scale with the patch."""
    paper = RelativePositionTask(view_size=400, patch_size=96)
    assert (paper.gap, paper.jitter) == (48, 7)
    task = RelativePositionTask()
    assert task.gap == task.patch_size // 2 and task.jitter == round(7 * task.patch_size / 96) > 0
    assert 3 * task.patch_size + 2 * task.gap + 2 * task.jitter <= task.view_size


@pytest.mark.parametrize("seed", range(20))
def test_default_patches_lie_in_the_view_a_gap_apart(photos: list[torch.Tensor], seed: int) -> None:
    task = RelativePositionTask()
    views = task.make_views(photos[seed % 4], torch.Generator().manual_seed(seed))
    size, corners = task.patch_size, views["corners"].tolist()
    for top, left in corners:
        assert 0 <= top <= task.view_size - size and 0 <= left <= task.view_size - size
    row_step, column_step = NEIGHBOURS[int(views["label"])]
    for axis, step in ((0, row_step), (1, column_step)):
        if step == 0:
            continue
        near, far = sorted((corners[0][axis], corners[1][axis]))
        gap = far - (near + size)  # empty pixels between the two patches along this axis
        assert task.gap - 2 * task.jitter <= gap <= task.gap + 2 * task.jitter
