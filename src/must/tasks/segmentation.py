"""Semantic segmentation (MuST sec. 3.3 pixel head, sec. 3.2 pseudo-label rule).

* head:         :class:`~must.models.heads.PixelHead` on fused P2 (3 hidden 3x3 convs + GroupNorm +
                ReLU, a 1x1 linear conv), bilinearly upsampled to the input size: ``[B, C, H, W]``.
* loss:         per-pixel cross-entropy with ``ignore_index=IGNORE_INDEX``; ``collate`` fills
                absent images with ``IGNORE_INDEX``, so they drop out with unlabeled pixels.
* pseudo label: per-pixel argmax where the top probability >= ``threshold`` (0.5 in the paper),
                else ``IGNORE_INDEX`` (sec. 3.2).
* metric:       mean IoU over the classes present in prediction or target (torchmetrics
                ``MulticlassJaccardIndex``) and pixel accuracy; primary ``"miou"``.
* draw:         a fixed colour per class (PASCAL VOC palette) blended over the image.
* geometry:     labels are warped with nearest neighbour (no class is ever blended with another)
                and padding is ``IGNORE_INDEX``: they survive every scale jitter, crop and flip.

The dense helpers :func:`collate_dense` and :func:`fit_map` are shared with depth and normals.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassJaccardIndex

from must.data.geometry import Geometry
from must.data.sample import IGNORE_INDEX, TaskBatch, stack_with_fill
from must.errors import ConfigError
from must.models.features import FeatureSpec
from must.models.heads import PixelHead
from must.tasks.base import Task


def collate_dense(targets: list[Tensor | None], fill: float, dtype: torch.dtype,
                  channels: tuple[int, ...] = ()) -> TaskBatch:
    """Stacks per-image ``[*channels, H, W]`` maps, absent images filled with ``fill``. With no
    target at all the value is an empty ``[B, *channels, 0, 0]`` tensor (losses check ``count``)."""
    values = [None if target is None else torch.as_tensor(target).to(dtype) for target in targets]
    shapes = {tuple(value.shape) for value in values if value is not None}
    if not shapes:
        empty = torch.full((len(targets), *channels, 0, 0), fill, dtype=dtype)
        return TaskBatch(torch.zeros(len(targets), dtype=torch.bool), empty)
    if len(shapes) > 1:
        raise ValueError(f"dense targets of different shapes in one batch: {sorted(shapes)}")
    shape = next(iter(shapes))
    if shape[:-2] != channels:
        raise ValueError(f"dense target of shape {shape}; expected {channels} + (H, W)")
    return stack_with_fill(values, fill)


def fit_map(values: Tensor, size: tuple[int, int]) -> Tensor:
    """Resizes a ``[H, W]`` or ``[C, H, W]`` map to ``size`` by nearest neighbour (for drawing a
    prediction on an image of another size)."""
    if tuple(values.shape[-2:]) == tuple(size):
        return values
    batched = values[None, None] if values.dim() == 2 else values[None]
    resized = F.interpolate(batched.float(), size=size, mode="nearest-exact").to(values.dtype)
    return resized[0, 0] if values.dim() == 2 else resized[0]


MAX_ELEMENTS = 1 << 25
"""Class probabilities upsampled to a large photo are argmax-ed in strips of at most this many
values (128 MB of float32): a 12-megapixel photo with 133 classes would otherwise take 6 GB."""


def upsampled_rows(region: Tensor, size: tuple[int, int], start: int, stop: int) -> Tensor:
    """Rows ``[start, stop)`` of ``region [C, h, w]`` bilinearly upsampled to ``size``: the same
    values as ``F.interpolate(..., align_corners=False)`` (``grid_sample`` at the same sample
    points, edges clamped as interpolate clamps them), without the whole map in memory."""
    height, width = size
    ys = (torch.arange(start, stop, dtype=torch.float32) + 0.5) * (2.0 / height) - 1.0
    xs = (torch.arange(width, dtype=torch.float32) + 0.5) * (2.0 / width) - 1.0
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)[None].to(region.device)
    return F.grid_sample(region[None], grid, mode="bilinear", padding_mode="border",
                         align_corners=False)[0]


@lru_cache(maxsize=8)
def palette(count: int) -> np.ndarray:
    """The PASCAL VOC colour map: class ``i``'s bits spread over the high bits of R, G, B.
    Fixed, so one class has one colour in every picture of a report."""
    colors = np.zeros((count, 3), dtype=np.uint8)
    for index in range(count):
        code, red, green, blue = index, 0, 0, 0
        for bit in range(7, -1, -1):
            red |= (code & 1) << bit
            green |= ((code >> 1) & 1) << bit
            blue |= ((code >> 2) & 1) << bit
            code >>= 3
        colors[index] = (red, green, blue)
    return colors


class SegmentationMetric:
    """mIoU (classes absent from both prediction and target are not averaged) and pixel accuracy,
    both from torchmetrics with ``ignore_index``; DDP-synced by torchmetrics."""

    def __init__(self, num_classes: int) -> None:
        self.metrics = MetricCollection({
            "miou": MulticlassJaccardIndex(num_classes, average="macro", ignore_index=IGNORE_INDEX),
            "pixel_accuracy": MulticlassAccuracy(num_classes, average="micro", ignore_index=IGNORE_INDEX),
        })

    def update(self, output: Tensor, target: TaskBatch) -> None:
        """``output``: the head's logits ``[B, C, H, W]``; ``target``: collated label maps."""
        self.metrics.to(output.device)  # even with no target: DDP syncs states from every rank
        if target.count == 0:
            return
        present = target.present.to(output.device)
        labels = output.detach()[present].argmax(dim=1)
        self.metrics.update(labels, target.value.to(output.device)[present])

    def compute(self) -> dict[str, float]:
        return {name: float(value) for name, value in self.metrics.compute().items()}

    def reset(self) -> None:
        self.metrics.reset()


class SegmentationTask(Task):
    """A class per pixel out of ``num_classes`` (see the module docstring)."""

    name = "segmentation"
    primary_metric = "miou"

    def __init__(self, num_classes: int, class_names: Sequence[str] | None = None, *,
                 hidden_channels: int | None = None, threshold: float = 0.5) -> None:
        if not 1 <= num_classes <= IGNORE_INDEX:
            raise ConfigError(f"num_classes must be in [1, {IGNORE_INDEX}] (label {IGNORE_INDEX} "
                              f"means ignore), got {num_classes}")
        if class_names is not None and len(class_names) != num_classes:
            raise ConfigError(f"{len(class_names)} class names for {num_classes} classes")
        self.num_classes = num_classes
        self.class_names = list(class_names) if class_names is not None else None
        self.hidden_channels = hidden_channels
        self.threshold = threshold

    def build_head(self, spec: FeatureSpec) -> nn.Module:
        hidden = self.hidden_channels or spec.fpn_channels
        return PixelHead(spec.fpn_channels, self.num_classes, hidden)

    def loss(self, output: Tensor, target: TaskBatch) -> dict[str, Tensor]:
        """Cross-entropy averaged over labeled pixels of the batch; ``0 * logits.sum()`` without any."""
        labels = target.value.to(output.device)
        if target.count == 0 or not bool((labels != IGNORE_INDEX).any()):
            return {"loss": output.sum() * 0.0}
        if labels.shape[-2:] != output.shape[-2:]:
            raise ValueError(f"segmentation target {tuple(labels.shape[-2:])} and output "
                             f"{tuple(output.shape[-2:])} differ in size")
        loss = F.cross_entropy(output.float(), labels.long(), ignore_index=IGNORE_INDEX)
        return {"loss": loss}

    def predict(self, output: Tensor) -> list[Tensor]:
        """Logits -> softmax probabilities ``float16 [C, H, W]`` per image (half the memory of
        float32 for many classes; ample precision for a 0.5 threshold and an argmax)."""
        return list(F.softmax(output.detach().float(), dim=1).half().unbind(0))

    def to_source_size(self, prediction: Tensor, geometry: Geometry) -> Tensor:
        """Probabilities ``[C, H, W]`` over the window -> ``float32`` at the source size, padding
        dropped (:meth:`Geometry.unwarp_dense_to_source`): resized as probabilities, so class
        borders fall where the probabilities cross, not on the window's pixel grid."""
        return geometry.unwarp_dense_to_source(prediction)

    def output_at_source_size(self, prediction: Tensor, geometry: Geometry) -> Tensor:
        """Class ids ``int64 [H, W]`` at the source size: the argmax of :meth:`to_source_size`,
        taken in strips of rows when the probabilities of a large photo would not fit in
        :data:`MAX_ELEMENTS` values."""
        region = geometry.unwarp_dense(prediction)  # a view: converted only if strips are needed
        height, width = geometry.source_size
        channels, rows, cols = region.shape
        if channels * height * width <= MAX_ELEMENTS or height < rows or width < cols:
            return self.to_source_size(prediction, geometry).argmax(dim=0)
        region = region.float()
        step = max(1, MAX_ELEMENTS // (channels * width))
        return torch.cat([upsampled_rows(region, (height, width), start, min(start + step, height)).argmax(dim=0)
                          for start in range(0, height, step)])

    def to_pseudo_label(self, prediction: Tensor, threshold: float | None = None) -> Tensor:
        """MuST sec. 3.2: ``int64 [H, W]`` argmax where the top probability >= ``threshold``,
        ``IGNORE_INDEX`` elsewhere."""
        limit = self.threshold if threshold is None else threshold
        confidence, labels = prediction.detach().float().max(dim=0)
        return torch.where(confidence >= limit, labels, torch.full_like(labels, IGNORE_INDEX))

    def metric(self) -> SegmentationMetric:
        return SegmentationMetric(self.num_classes)

    def draw(self, image: np.ndarray, prediction: Tensor) -> np.ndarray:
        """Blends each pixel's class colour 50/50 over the image; ignored pixels stay as they are.
        ``prediction``: probabilities ``[C, H, W]`` or a label map ``[H, W]``."""
        labels = prediction.detach().cpu()
        labels = labels.argmax(dim=0) if labels.is_floating_point() else labels.long()
        labels = fit_map(labels, image.shape[:2]).numpy()
        known = labels != IGNORE_INDEX
        colors = palette(self.num_classes)[np.where(known, labels, 0).clip(0, self.num_classes - 1)]
        blended = 0.5 * image.astype(np.float32) + 0.5 * colors.astype(np.float32)
        return np.where(known[..., None], blended, image).round().astype(np.uint8)

    def transform_target(self, target: Tensor, geometry: Geometry) -> Tensor:
        """Nearest-neighbour warp (classes are never blended); padding becomes ``IGNORE_INDEX``."""
        return geometry.warp_dense(target, mode="nearest", fill=IGNORE_INDEX)

    def collate(self, targets: list[Tensor | None]) -> TaskBatch:
        """``int64 [B, H, W]``; absent images are all ``IGNORE_INDEX``, so the loss skips them."""
        return collate_dense(targets, IGNORE_INDEX, torch.int64)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "num_classes": self.num_classes, "class_names": self.class_names}
