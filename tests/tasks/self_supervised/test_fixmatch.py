"""FixMatch: the loss on a hand-worked case for images and for pixels, the weak / strong views,
the shared head, training."""

import math

import pytest
import torch
import torch.nn.functional as F
from torchvision.transforms import v2

from must.data.sample import TaskBatch
from must.errors import ConfigError
from must.tasks.classification import ClassificationTask
from must.tasks.depth import DepthTask
from must.tasks.segmentation import SegmentationTask
from must.data.noise import OPERATIONS
from must.tasks.self_supervised.fixmatch import FixMatchTask


def test_loss_hand_worked() -> None:
    """Weak-view confidences 0.993, 0.5 and 0.993: images 0 and 2 keep pseudo labels 0 and 1;
    the mean runs over all three images (FixMatch eq. 4)."""
    task = FixMatchTask(ClassificationTask(2), threshold=0.95, weight=2.0)
    weak = torch.tensor([[5.0, 0.0], [0.0, 0.0], [0.0, 5.0]])
    strong = torch.tensor([[1.0, 2.0], [3.0, -1.0], [0.5, 1.5]])  # kept: one wrong, one right
    output = {"weak": weak, "strong": strong, "threshold": torch.tensor(0.95)}
    expected = 2.0 * (math.log(1 + math.exp(1.0)) + math.log(1 + math.exp(-1.0))) / 3
    losses = task.loss(output, TaskBatch(torch.ones(3, dtype=torch.bool), {}))
    assert losses["loss"].item() == pytest.approx(expected, rel=1e-6)
    assert losses["mask_rate"].item() == pytest.approx(2 / 3)
    metric = task.metric()
    metric.update(output, TaskBatch(torch.ones(3, dtype=torch.bool), {}))
    assert metric.compute() == pytest.approx({"mask_rate": 2 / 3, "agreement": 0.5})


def test_loss_per_pixel() -> None:
    task = FixMatchTask(SegmentationTask(3), threshold=0.8)
    weak = torch.randn(2, 3, 4, 5) * 3
    strong = torch.randn(2, 3, 4, 5)
    confidence, pseudo = F.softmax(weak, dim=1).max(dim=1)
    per_pixel = F.cross_entropy(strong, pseudo, reduction="none")
    expected = (per_pixel * (confidence >= 0.8)).sum() / per_pixel.numel()
    output = {"weak": weak, "strong": strong, "threshold": torch.tensor(0.8)}
    assert torch.allclose(task.view_loss(output)["loss"], expected)


def test_wraps_the_supervised_head(trunk) -> None:
    base = ClassificationTask(4)
    task = FixMatchTask(base)
    assert task.name == "fixmatch_classification" and task.head_name == "classification"
    assert type(task.build_head(trunk.spec)) is type(base.build_head(trunk.spec))
    with pytest.raises(ConfigError, match="not 'depth'"):
        FixMatchTask(DepthTask())


def test_dense_strong_views_use_randaugments_photometric_operations_only() -> None:
    """The dense strong view draws from :mod:`must.data.noise`: every RandAugment operation but
    those that move pixels."""
    geometric = {"shearx", "sheary", "translatex", "translatey", "rotate"}
    randaugment = {name.lower() for name in v2.RandAugment._AUGMENTATION_SPACE}
    assert geometric <= randaugment  # the names still match torchvision's
    assert set(OPERATIONS) == randaugment - geometric


def test_dense_views_stay_aligned(photos: list[torch.Tensor]) -> None:
    """Without Cutout, a segmentation strong view is a pixelwise recolouring of the weak view:
    pixels with one colour in the weak view share one colour in the strong view, up to the
    neighbourhood filters (sharpness) which only act near edges; flat regions stay flat."""
    task = FixMatchTask(SegmentationTask(3), view_size=32, cutout=False)
    image = torch.zeros(3, 32, 32, dtype=torch.uint8)
    image[:, :, 16:] = 200  # left half black, right half grey: flips move the edge, shifts pad
    for seed in range(10):
        views = task.make_views(image, torch.Generator().manual_seed(seed))
        weak, strong = views["weak"].int(), views["strong"].int()
        for value in weak.unique():
            region = weak[0] == value
            # Pixels whose whole 3x3 neighbourhood (sharpness's kernel) lies in the region.
            outside = F.max_pool2d((~region).float()[None], 3, stride=1, padding=1)[0] > 0
            interior = region & ~outside
            interior[[0, -1], :] = interior[:, [0, -1]] = False
            if interior.any():
                assert strong[:, interior].unique(dim=1).shape[1] == 1


def test_classification_views_are_independent(photos: list[torch.Tensor]) -> None:
    task = FixMatchTask(ClassificationTask(3), view_size=32)
    views = task.make_views(photos[0], torch.Generator().manual_seed(0))
    assert views["weak"].shape == views["strong"].shape == (3, 32, 32)
    assert not torch.equal(views["weak"], views["strong"])


@pytest.mark.parametrize("base", [ClassificationTask(5), SegmentationTask(3)],
                         ids=["classification", "segmentation"])
def test_trains(base, photos, trunk, batch_of, train) -> None:
    task = FixMatchTask(base, threshold=0.0, view_size=32)
    curve = train(task, trunk, batch_of(task, photos), steps=30, lr=1e-2)
    assert curve.ratio < 0.7, curve
