"""SimCLR: two augmented views per image, the projection head, NT-Xent on its output, training."""

import pytest
import torch
from torchvision.transforms import v2

from must.losses.ntxent import nt_xent_loss
from must.tasks.self_supervised.simclr import SimCLRTask, simclr_transform


def test_views(photos: list[torch.Tensor]) -> None:
    task = SimCLRTask(view_size=32)
    views = task.make_views(photos[0], torch.Generator().manual_seed(0))["views"]
    assert views.shape == (2, 3, 32, 32) and views.dtype == torch.uint8
    assert not torch.equal(views[0], views[1])  # two independent draws
    other = task.make_views(photos[0], torch.Generator().manual_seed(1))["views"]
    assert not torch.equal(views, other)


def test_transform_follows_the_paper() -> None:
    steps = simclr_transform(96, color_strength=1.0).transforms
    crop, flip, jitter, gray, blur = steps
    assert isinstance(crop, v2.RandomResizedCrop) and crop.scale == (0.08, 1.0)
    assert isinstance(flip, v2.RandomHorizontalFlip)
    assert jitter.p == 0.8 and jitter.transforms[0].brightness == pytest.approx((0.2, 1.8))
    assert jitter.transforms[0].hue == pytest.approx((-0.2, 0.2))
    assert isinstance(gray, v2.RandomGrayscale) and gray.p == 0.2
    kernel = blur.transforms[0].kernel_size
    assert blur.p == 0.5 and kernel[0] % 2 == 1 and kernel[0] == 9  # odd, ~10% of 96
    assert len(simclr_transform(96, blur=False).transforms) == 4


def test_loss_is_nt_xent_of_the_projections(photos, trunk, batch_of) -> None:
    task = SimCLRTask(view_size=32, temperature=0.2, projection_dim=8, hidden_dim=16)
    batch = batch_of(task, photos)
    head = task.build_head(trunk.spec)
    output = task.forward_views(head, trunk.features, batch)
    assert output["first"].shape == (4, 8) and output["second"].shape == (4, 8)
    # The two views of image i are rows 2i and 2i + 1 of one trunk pass.
    projections = head(trunk.features(batch.value["views"].flatten(0, 1).float() / 255))
    assert torch.allclose(output["first"], projections[0::2], atol=1e-5)
    expected = nt_xent_loss(projections[0::2], projections[1::2], 0.2)
    assert torch.allclose(task.loss(output, batch)["loss"], expected, atol=1e-5)


def test_trains(photos, trunk, batch_of, train) -> None:
    task = SimCLRTask(view_size=32, projection_dim=16, hidden_dim=32)
    curve = train(task, trunk, batch_of(task, photos), steps=30)
    assert curve.ratio < 0.5, curve
