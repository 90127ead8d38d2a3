"""Motion segmentation (Doersch & Zisserman 2017 sec. 2, after Pathak et al. 2017, "Learning
Features by Watching Objects Move"): from a single frame, predict which pixels move.

The fourth of Doersch & Zisserman's self-supervised tasks. Its labels cannot come from the image
alone: they are derived from the video the frame belongs to (Pathak et al. segment the moving
objects of each clip; the world's ``video`` domain renders them exactly), and the reader brings
them with the frame (``video:DIR``, target ``motion_segmentation``: ``uint8 [H, W]``, 1 = moves).
So the task reads its views from the *sample* (:meth:`sample_views`), not only from the image:

* views:  one random square of the frame (side a fraction ``crop_scale`` of the short side) and
          the same square of its mask, resized to ``view_size`` (the mask by nearest neighbour),
          both flipped left-right half of the time. A frame without a mask has no views.
* head:   :class:`~must.models.heads.PixelHead` on fused P2 (3 hidden 3x3 convs + GroupNorm +
          ReLU, a 1x1 conv), one logit per pixel, bilinearly upsampled to the view.
* loss:   per-pixel binary cross-entropy (sec. 2); ``positive_weight`` > 1 weighs the moving
          pixels up (few pixels move: with 1, the paper's loss, an object that moves in fewer than
          half of the scenes it appears in stays below probability 0.5).
* metric: IoU of the moving pixels and pixel accuracy (torchmetrics); primary ``"iou"``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MetricCollection
from torchmetrics.classification import BinaryAccuracy, BinaryJaccardIndex
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from must.config import ConfigError
from must.data.readers.reader_dataset import ReaderDataset
from must.data.sample import Sample, TaskBatch
from must.models.features import FeatureSpec
from must.models.heads import PixelHead
from must.tasks.self_supervised.base import FeaturesFn, SelfSupervisedTask, present_views, to_unit

TASK = "motion_segmentation"


def _uniform(low: float, high: float, generator: torch.Generator) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def crop_frame_and_mask(image: Tensor, mask: Tensor, size: int, crop_scale: tuple[float, float],
                        generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """The same random square of ``image`` (``uint8 [3, H, W]``) and ``mask`` (``[H, W]``),
    resized to ``size`` (the mask by nearest neighbour), flipped left-right with probability 1/2."""
    height, width = int(image.shape[-2]), int(image.shape[-1])
    side = max(1, round(min(height, width) * _uniform(*crop_scale, generator)))
    top = int(torch.randint(0, height - side + 1, (), generator=generator))
    left = int(torch.randint(0, width - side + 1, (), generator=generator))
    frame = TF.resize(image[:, top:top + side, left:left + side], [size, size], antialias=True)
    labels = TF.resize(mask[None, top:top + side, left:left + side].to(torch.uint8), [size, size],
                       interpolation=InterpolationMode.NEAREST_EXACT)[0]
    if bool(torch.rand((), generator=generator) < 0.5):
        frame, labels = frame.flip(-1), labels.flip(-1)
    return frame.contiguous(), labels.contiguous()


class MotionMetric:
    """IoU of the moving pixels and pixel accuracy at probability 0.5 (torchmetrics)."""

    def __init__(self) -> None:
        self.metrics = MetricCollection({"iou": BinaryJaccardIndex(), "pixel_accuracy": BinaryAccuracy()})

    def update(self, output: dict[str, Tensor] | None, target: TaskBatch) -> None:
        if output is None:
            return
        self.metrics.to(output["logits"].device)
        self.metrics.update(torch.sigmoid(output["logits"].detach().float()), output["mask"].long())

    def compute(self) -> dict[str, float]:
        return {name: float(value) for name, value in self.metrics.compute().items()}

    def reset(self) -> None:
        self.metrics.reset()


class MotionSegmentationTask(SelfSupervisedTask):
    """Which pixels of a frame move (see the module docstring)."""

    name = TASK
    primary_metric = "iou"

    def __init__(self, view_size: int = 64, hidden_dim: int = 128,
                 crop_scale: tuple[float, float] = (0.6, 1.0), positive_weight: float = 1.0) -> None:
        if not 0 < crop_scale[0] <= crop_scale[1] <= 1:
            raise ConfigError(f"crop_scale must satisfy 0 < low <= high <= 1, got {crop_scale}")
        if positive_weight <= 0:
            raise ConfigError(f"positive_weight must be > 0, got {positive_weight}")
        self.positive_weight = float(positive_weight)
        self.view_size = view_size
        self.hidden_dim = hidden_dim
        self.crop_scale = (float(crop_scale[0]), float(crop_scale[1]))

    def build_head(self, spec: FeatureSpec) -> PixelHead:
        return PixelHead(spec.fpn_channels, 1, self.hidden_dim)

    def make_views(self, image: Tensor, generator: torch.Generator, index: int | None = None,
                   mask: Tensor | None = None) -> dict[str, Tensor]:
        """``{"frame": uint8 [3, s, s], "mask": uint8 [s, s]}`` from a frame and its motion mask."""
        if mask is None:
            raise ValueError(f"{self.name} needs the frame's motion mask (from video: --data video:DIR)")
        if tuple(mask.shape[-2:]) != tuple(image.shape[-2:]):
            raise ValueError(f"motion mask {tuple(mask.shape)} and frame {tuple(image.shape)} differ in size")
        frame, labels = crop_frame_and_mask(image, mask != 0, self.view_size, self.crop_scale, generator)
        return {"frame": frame, "mask": labels}

    def sample_views(self, sample: Sample, generator: torch.Generator,
                     index: int | None = None) -> dict[str, Tensor] | None:
        """The views of a frame with its motion mask; ``None`` for an image without one."""
        mask = sample.targets.get(self.name)
        return None if mask is None else self.make_views(sample.image, generator, index, mask=mask)

    def forward_views(self, head: nn.Module, features_fn: FeaturesFn,
                      target: TaskBatch | None) -> dict[str, Tensor] | None:
        views = present_views(target)
        if views is None:
            return None
        logits = head(features_fn(to_unit(views["frame"])))[:, 0]
        return {"logits": logits, "mask": views["mask"]}

    def view_loss(self, output: dict[str, Tensor]) -> dict[str, Tensor]:
        logits = output["logits"].float()
        weight = None if self.positive_weight == 1.0 else logits.new_tensor(self.positive_weight)
        loss = F.binary_cross_entropy_with_logits(logits, output["mask"].float(), pos_weight=weight)
        return {"loss": loss}

    def predict(self, output: dict[str, Tensor] | None) -> list[Tensor]:
        """``float32 [s, s]`` probability that each pixel moves, per view."""
        if output is None:
            return []
        return list(torch.sigmoid(output["logits"].detach().float()).unbind(0))

    def metric(self) -> MotionMetric:
        return MotionMetric()

    def draw(self, image: np.ndarray, prediction: Tensor) -> np.ndarray:
        """Pixels predicted to move tinted red."""
        height, width = image.shape[:2]
        probability = F.interpolate(prediction[None, None].float().cpu(), size=(height, width),
                                    mode="bilinear", align_corners=False)[0, 0].numpy()
        tinted = image.astype(np.float32)
        moving = probability >= 0.5
        tinted[moving] = 0.5 * tinted[moving] + 0.5 * np.array([255.0, 0.0, 0.0])
        return tinted.round().astype(np.uint8)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "kind": "self_supervised", "view_size": self.view_size}


def require_motion_masks(task_names: Sequence[str], datasets: Sequence[ReaderDataset]) -> None:
    """Refuses to train motion segmentation on images that carry no motion masks (its loss would
    be zero at every step)."""
    if TASK in task_names and not any(TASK in dataset.tasks for dataset in datasets):
        names = ", ".join(dataset.name for dataset in datasets)
        raise ConfigError(f"task '{TASK}' learns from motion masks derived from video, and {names} "
                          "has none; give clips with masks (--data video:DIR or more_data, e.g. from "
                          "`must world video`)")
