"""A tiny conv trunk with the model's ``features`` interface, a handful of skimage photos, and a
short training loop: what every self-supervised test trains."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import pytest
import skimage.data
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from must.data.sample import TaskBatch
from must.models.features import Features, FeatureSpec
from must.tasks.self_supervised.base import SelfSupervisedTask

STAGES = (("c2", 8, 4), ("c3", 16, 2), ("c4", 24, 2), ("c5", 32, 2))  # name, channels, stride


class TinyTrunk(nn.Module):
    """C2..C5 at strides 4, 8, 16, 32 (conv + BatchNorm + ReLU, as a ResNet stage ends) and a
    'pyramid' P2..P5 of 1x1 laterals, 16 channels."""

    spec = FeatureSpec(c5_channels=32, fpn_channels=16, levels=("p2", "p3", "p4", "p5"),
                       strides={"p2": 4, "p3": 8, "p4": 16, "p5": 32}, stage_channels=(8, 16, 24, 32))

    def __init__(self) -> None:
        super().__init__()
        layers, channels = [], 3
        for _, width, stride in STAGES:
            kernel, padding = (stride, 0) if stride == 4 else (3, 1)
            layers.append(nn.Sequential(nn.Conv2d(channels, width, kernel, stride, padding, bias=False),
                                        nn.BatchNorm2d(width), nn.ReLU()))
            channels = width
        self.layers = nn.ModuleList(layers)
        self.laterals = nn.ModuleList(nn.Conv2d(width, 16, 1) for _, width, _ in STAGES)

    def features(self, images: Tensor) -> Features:
        assert images.is_floating_point() and 0 <= float(images.min()) and float(images.max()) <= 1
        x = (images - 0.5) / 0.25
        stages: OrderedDict[str, Tensor] = OrderedDict()
        for (name, _, _), layer in zip(STAGES, self.layers):
            x = layer(x)
            stages[name] = x
        pyramid = OrderedDict((f"p{i + 2}", lateral(stage))
                              for i, (lateral, stage) in enumerate(zip(self.laterals, stages.values())))
        return Features((int(images.shape[-2]), int(images.shape[-1])), stages, pyramid)


@pytest.fixture
def trunk() -> TinyTrunk:
    return TinyTrunk()


@pytest.fixture(scope="session")
def photos() -> list[Tensor]:
    """Four real photos (bundled with scikit-image), ``uint8 [3, 64, 64]``."""
    result = []
    for name in ("astronaut", "coffee", "chelsea", "rocket"):
        image = torch.from_numpy(getattr(skimage.data, name)()).permute(2, 0, 1).float()[None]
        result.append(F.interpolate(image, size=(64, 64), mode="area")[0].round().to(torch.uint8))
    return result


def make_batch(task: SelfSupervisedTask, photos: list[Tensor], seed: int = 0) -> TaskBatch:
    generator = torch.Generator().manual_seed(seed)
    views = [task.make_views(photo, generator, index=i) for i, photo in enumerate(photos)]
    return task.collate(views)


class Curve(list):
    """Losses of a training run."""

    @property
    def ratio(self) -> float:
        """Mean of the last five losses over the mean of the first five."""
        return (sum(self[-5:]) / 5) / (sum(self[:5]) / 5)


def fit(task: SelfSupervisedTask, trunk: TinyTrunk, batch: TaskBatch, steps: int = 30,
        lr: float = 3e-3, head: nn.Module | None = None) -> Curve:
    """Adam on trunk + head over one fixed batch of views; the loss of every step."""
    head = head if head is not None else task.build_head(trunk.spec)
    optimizer = torch.optim.Adam([*trunk.parameters(), *head.parameters()], lr=lr)
    losses = Curve()
    for _ in range(steps):
        loss = task.loss(task.forward_views(head, trunk.features, batch), batch)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    return losses


@pytest.fixture
def batch_of() -> Callable[..., TaskBatch]:
    return make_batch


@pytest.fixture
def train() -> Callable[..., Curve]:
    return fit
