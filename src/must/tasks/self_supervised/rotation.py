"""Rotation prediction (Gidaris et al. 2018, "Unsupervised Representation Learning by Predicting
Image Rotations").

* views:  a random square of the image resized to ``view_size`` and rotated by 0, 90, 180 and
          270 degrees (counter-clockwise); label ``k`` for ``k * 90`` degrees. By default all four
          rotations of every image are in the batch, which Gidaris et al. found better than one
          random rotation (sec. 3.2.1, "Rotating all four ... at the same time").
* head:   pooled C5 -> MLP -> 4 logits; cross-entropy.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from must.data.sample import TaskBatch
from must.models.features import Features, FeatureSpec
from must.tasks.self_supervised.base import (
    FeaturesFn,
    PretextClassificationTask,
    mlp,
    pooled_c5,
    present_views,
    square_view,
    to_unit,
    write_text,
)

ROTATIONS = 4


def rotate(image: Tensor, quarter_turns: int) -> Tensor:
    """``[..., H, W]`` rotated counter-clockwise by ``quarter_turns * 90`` degrees."""
    return torch.rot90(image, quarter_turns, dims=(-2, -1))


class RotationHead(nn.Module):
    reads_pyramid = False  # pooled C5 only: the model need not run the FPN for it

    def __init__(self, in_channels: int, hidden: int) -> None:
        super().__init__()
        self.classifier = mlp([in_channels, hidden, ROTATIONS])

    def forward(self, features: Features, target: TaskBatch | None = None) -> Tensor:
        return self.classifier(pooled_c5(features))


class RotationTask(PretextClassificationTask):
    name = "rotation"
    num_outputs = ROTATIONS

    def __init__(self, view_size: int = 64, all_rotations: bool = True, hidden_dim: int = 256) -> None:
        self.view_size = view_size
        self.all_rotations = all_rotations
        self.hidden_dim = hidden_dim

    def build_head(self, spec: FeatureSpec) -> RotationHead:
        return RotationHead(spec.c5_channels, self.hidden_dim)

    def make_views(self, image: Tensor, generator: torch.Generator,
                   index: int | None = None) -> dict[str, Tensor]:
        """``{"images": uint8 [R, 3, s, s], "labels": int64 [R]}``, R = 4 (or 1 random rotation)."""
        square = square_view(image, self.view_size, generator)
        if self.all_rotations:
            labels = torch.arange(ROTATIONS)
        else:
            labels = torch.randint(0, ROTATIONS, (1,), generator=generator)
        return {"images": torch.stack([rotate(square, int(k)) for k in labels]), "labels": labels}

    def forward_views(self, head: nn.Module, features_fn: FeaturesFn,
                      target: TaskBatch | None) -> dict[str, Tensor] | None:
        views = present_views(target)
        if views is None:
            return None
        logits = head(features_fn(to_unit(views["images"].flatten(0, 1))))
        return {"logits": logits, "labels": views["labels"].flatten()}

    def draw(self, image: np.ndarray, prediction: Tensor) -> np.ndarray:
        """The image turned back by the predicted rotation (upright when the prediction is right
        for an upright input) with the predicted angle."""
        turns = int(prediction)
        upright = np.ascontiguousarray(np.rot90(np.asarray(image), -turns, axes=(0, 1)))
        return write_text(upright, f"rotation: {90 * turns} deg")

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "kind": "self_supervised", "all_rotations": self.all_rotations}
