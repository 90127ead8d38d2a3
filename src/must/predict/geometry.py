"""Predictions on the model's square input window mapped back to each image's source size.

The image is fitted into the window the model was trained at with its aspect ratio kept: its
longer side scaled to the window's side, placed at the top-left, the rest padded (the training
geometry of MuST sec. 3.4 at scale 1, without crop or flip). Mapping back drops the padding and
rescales: boxes per axis, dense maps by bilinear interpolation (antialiased when shrinking).
Segmentation is resized as probabilities and only then reduced to class ids, so class borders
fall where the probabilities cross, not on the window's pixel grid.

:data:`TO_SOURCE_SIZE` holds one function per task (an explicit dict, as for task builders).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from must.data.geometry import Geometry


def fit(source_size: tuple[int, int], window: int) -> Geometry:
    """``source_size`` (height, width) fitted into a ``window`` square: :meth:`Geometry.fit`, the
    evaluation and labeling geometry."""
    return Geometry.fit(source_size, (window, window))


def fit_image(image: Tensor, window: int) -> tuple[Tensor, Geometry]:
    """``uint8`` or float ``[3, H, W]`` -> the same dtype ``[3, window, window]`` and its geometry."""
    geometry = fit((int(image.shape[-2]), int(image.shape[-1])), window)
    if image.dtype == torch.uint8:
        return geometry.warp_image(image), geometry
    return geometry.warp_dense(image, mode="bilinear", fill=0.0), geometry


def unwarp_boxes(boxes: Tensor, geometry: Geometry) -> Tensor:
    """xyxy boxes in window pixels -> source pixels, clipped to the source image."""
    return geometry.unwarp_boxes(boxes)


def content(values: Tensor, geometry: Geometry) -> Tensor:
    """The image's region of a ``[..., h, w]`` map over the window (at the window's resolution
    or a proportional one), padding cut off."""
    return geometry.unwarp_dense(values).float()


def unwarp_dense(values: Tensor, geometry: Geometry) -> Tensor:
    """``[H, W]`` or ``[C, H, W]`` over the window -> float at the source size: the image's
    region cut out, then resized."""
    region = content(values, geometry)
    size = geometry.source_size
    if tuple(region.shape[-2:]) == size:
        return region
    batched = region[None, None] if region.dim() == 2 else region[None]
    shrinking = size[0] < region.shape[-2] or size[1] < region.shape[-1]
    resized = F.interpolate(batched, size=size, mode="bilinear", align_corners=False, antialias=shrinking)
    return resized[0, 0] if region.dim() == 2 else resized[0]


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


MAX_ELEMENTS = 1 << 25
"""Class probabilities upsampled to a large photo are argmax-ed in strips of at most this many
values (128 MB of float32): a 12-megapixel photo with 133 classes would otherwise take 6 GB."""


def _classification(prediction: Tensor, geometry: Geometry) -> Tensor:
    return prediction.float()


def _detection(prediction: dict[str, Tensor], geometry: Geometry) -> dict[str, Tensor]:
    return {**prediction, "boxes": unwarp_boxes(prediction["boxes"].reshape(-1, 4), geometry)}


def _segmentation(prediction: Tensor, geometry: Geometry) -> Tensor:
    """Probabilities ``[C, h, w]`` -> class ids ``int64 [H, W]``."""
    region = content(prediction, geometry)
    height, width = geometry.source_size
    channels, rows, cols = region.shape
    if channels * height * width <= MAX_ELEMENTS or height < rows or width < cols:
        return unwarp_dense(prediction, geometry).argmax(dim=0)
    step = max(1, MAX_ELEMENTS // (channels * width))
    return torch.cat([upsampled_rows(region, (height, width), start, min(start + step, height)).argmax(dim=0)
                      for start in range(0, height, step)])


def _depth(prediction: Tensor, geometry: Geometry) -> Tensor:
    return unwarp_dense(prediction.reshape(prediction.shape[-2:]), geometry)


def _normals(prediction: Tensor, geometry: Geometry) -> Tensor:
    """Interpolated vectors are shorter than one: renormalized."""
    return F.normalize(unwarp_dense(prediction, geometry), dim=0)


TO_SOURCE_SIZE: dict[str, Callable[[Any, Geometry], Any]] = {
    "classification": _classification,
    "detection": _detection,
    "segmentation": _segmentation,
    "depth": _depth,
    "normals": _normals,
}
"""Task -> ``(prediction on the window, geometry) -> prediction at the source size``."""
