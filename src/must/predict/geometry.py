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
    """``source_size`` (height, width) scaled so that it just fits a ``window`` square, at the
    top-left; the rest of the window is padding. A square image fills the window."""
    factor = min(window / source_size[0], window / source_size[1])
    resized = (min(window, max(1, round(source_size[0] * factor))),
               min(window, max(1, round(source_size[1] * factor))))
    return Geometry(source_size, resized, (0, 0), (window, window), False)


def fit_image(image: Tensor, window: int) -> tuple[Tensor, Geometry]:
    """``uint8`` or float ``[3, H, W]`` -> the same dtype ``[3, window, window]`` and its geometry."""
    geometry = fit((int(image.shape[-2]), int(image.shape[-1])), window)
    if image.dtype == torch.uint8:
        return geometry.warp_image(image), geometry
    return geometry.warp_dense(image, mode="bilinear", fill=0.0), geometry


def unwarp_boxes(boxes: Tensor, geometry: Geometry) -> Tensor:
    """xyxy boxes in window pixels -> source pixels, clipped to the source image."""
    height, width = geometry.source_size
    factors = torch.tensor([width / geometry.resized_size[1], height / geometry.resized_size[0]] * 2,
                           device=boxes.device)
    out = boxes.float() * factors
    out[:, [0, 2]] = out[:, [0, 2]].clamp(0, width)
    out[:, [1, 3]] = out[:, [1, 3]].clamp(0, height)
    return out


def unwarp_dense(values: Tensor, geometry: Geometry) -> Tensor:
    """``[H, W]`` or ``[C, H, W]`` over the window (at its resolution or a proportional one) ->
    float at the source size: the image's region cut out, then resized."""
    rows = values.shape[-2] / geometry.output_size[0]
    cols = values.shape[-1] / geometry.output_size[1]
    region = values[..., :max(1, round(geometry.resized_size[0] * rows)),
                    :max(1, round(geometry.resized_size[1] * cols))].float()
    size = geometry.source_size
    if tuple(region.shape[-2:]) == size:
        return region
    batched = region[None, None] if region.dim() == 2 else region[None]
    shrinking = size[0] < region.shape[-2] or size[1] < region.shape[-1]
    resized = F.interpolate(batched, size=size, mode="bilinear", align_corners=False, antialias=shrinking)
    return resized[0, 0] if region.dim() == 2 else resized[0]


def _classification(prediction: Tensor, geometry: Geometry) -> Tensor:
    return prediction.float()


def _detection(prediction: dict[str, Tensor], geometry: Geometry) -> dict[str, Tensor]:
    return {**prediction, "boxes": unwarp_boxes(prediction["boxes"].reshape(-1, 4), geometry)}


def _segmentation(prediction: Tensor, geometry: Geometry) -> Tensor:
    """Probabilities ``[C, h, w]`` -> class ids ``int64 [H, W]``."""
    return unwarp_dense(prediction, geometry).argmax(dim=0)


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
