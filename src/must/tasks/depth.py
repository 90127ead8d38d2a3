"""Monocular depth (MuST sec. 3.3 pixel head, sec. 3.2 pseudo labels, sec. 4.2 NYU v2 metric).

* head:         :class:`~must.models.heads.PixelHead` with one output channel and a softplus:
                ``[B, 1, H, W]`` positive depth. Softplus rather than exp because its slope is at
                most 1: an L1 step moves the depth linearly, nothing overflows under bf16/fp16
                autocast, and an early large logit does not explode the gradient, whereas exp's
                gradient grows with the depth itself.
* loss:         ``"l1"``: mean ``|pred - gt|`` over valid pixels (gt > 0) of metric depth.
                ``"ssi"``: scale-and-shift invariant (MiDaS, Ranftl et al. 2020, sec. 5): per image
                ``s, t = argmin sum (s * pred + t - gt)^2`` over valid pixels (closed form, gradient
                flows through ``s, t``), then mean ``|s * pred + t - gt|`` (MiDaS Table 2: absolute
                error beats MSE). For relative-depth targets (other teachers' pseudo labels).
* pseudo label: the teacher's output as is, ``float32 [H, W]`` (sec. 3.2).
* metric:       ``delta1`` = fraction of valid pixels with ``max(pred/gt, gt/pred) < 1.25`` (the
                paper's NYU metric), ``abs_rel`` and ``rmse``, pooled over all valid pixels (Eigen
                et al. 2014). ``align`` first fits each prediction to its ground truth:
                ``"scale_shift"`` by the same least-squares ``s, t`` as the SSI loss (MiDaS's
                experiments evaluate relative-depth models after such an alignment; without it the
                output of a model trained up to scale and shift has no metric meaning; the fit is
                in the space the targets are given in, depth here, where MiDaS fits inverse
                depth), ``"median"`` by ``median(gt) / median(pred)``, ``"none"`` as is. The
                default follows the loss:
                ``"scale_shift"`` for ``"ssi"``, ``"none"`` for ``"l1"``.
* draw:         turbo colour map of the prediction (near = red, far = blue), invalid pixels black.
* geometry:     nearest-neighbour warp (bilinear would invent depths between a foreground edge and
                the wall behind it, and blend invalid zeros in), padding ``0`` = invalid. Depth
                values are not rescaled: scaling an image changes the apparent focal length, not
                the distance to the scene, so metric depth is unchanged. It survives every scale,
                crop and flip, but a model cannot tell a jittered close-up from a nearer scene: with
                strong scale jitter metric depth is ambiguous, which the ``"ssi"`` loss avoids.
"""

from __future__ import annotations

from typing import Any, Literal

import matplotlib
import numpy as np
import torch
from torch import Tensor, nn
from torchmetrics import Metric

from must.data.geometry import Geometry
from must.data.sample import TaskBatch
from must.errors import ConfigError
from must.models.features import FeatureSpec
from must.models.heads import PixelHead
from must.tasks.base import Task
from must.tasks.segmentation import collate_dense, fit_map

DepthLoss = Literal["l1", "ssi"]
DepthAlignment = Literal["none", "median", "scale_shift"]
ALIGNMENTS: tuple[DepthAlignment, ...] = ("none", "median", "scale_shift")


def valid_depth(depth: Tensor) -> Tensor:
    """Pixels with a measured depth: positive and finite (``0`` marks invalid)."""
    return (depth > 0) & torch.isfinite(depth)


def align_scale_and_shift(prediction: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """Per image ``[N, H, W]``: ``s * prediction + t`` with ``s, t`` the least-squares fit to
    ``target`` over ``mask`` (MiDaS eq. 4). A constant prediction gets ``s = 0, t = mean(gt)``."""
    weight = mask.to(prediction.dtype)
    count = weight.sum(dim=(-2, -1)).clamp_min(1)
    gt = torch.where(mask, target, torch.zeros_like(target)).to(prediction.dtype)
    mean_prediction = (weight * prediction).sum(dim=(-2, -1)) / count
    mean_target = (weight * gt).sum(dim=(-2, -1)) / count
    centered = (prediction - mean_prediction[:, None, None]) * weight
    variance = (centered * centered).sum(dim=(-2, -1))
    covariance = (centered * (gt - mean_target[:, None, None])).sum(dim=(-2, -1))
    usable = variance > 1e-12 * count
    # the denominator is 1 where unusable so no inf reaches the backward pass of torch.where
    scale = torch.where(usable, covariance / torch.where(usable, variance, torch.ones_like(variance)),
                        torch.zeros_like(variance))
    shift = mean_target - scale * mean_prediction
    return scale[:, None, None] * prediction + shift[:, None, None]


def median_scaled(prediction: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """Each image's prediction times ``median(gt) / median(pred)`` over its valid pixels."""
    scaled = prediction.clone()
    for index in range(prediction.shape[0]):
        valid = mask[index]
        if valid.any():
            ratio = target[index][valid].median() / prediction[index][valid].median().clamp_min(1e-6)
            scaled[index] = prediction[index] * ratio
    return scaled


class DepthMetric(Metric):
    """delta < 1.25, AbsRel and RMSE pooled over every valid pixel seen (torchmetrics states,
    summed across DDP processes)."""

    full_state_update = False

    def __init__(self, align: DepthAlignment = "none") -> None:
        super().__init__()
        if align not in ALIGNMENTS:
            raise ConfigError(f"unknown depth alignment '{align}'; choose one of: {', '.join(ALIGNMENTS)}")
        self.align = align
        for state in ("pixels", "within_delta1", "abs_rel_sum", "squared_error_sum"):
            self.add_state(state, default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, output: Tensor, target: TaskBatch) -> None:
        """``output``: the head's ``[B, 1, H, W]`` (or ``[B, H, W]``) depth; ``target``: collated."""
        self.to(output.device)  # even with no target: DDP syncs states from every rank
        if target.count == 0:
            return
        present = target.present.to(output.device)
        prediction = output.detach().float().reshape(output.shape[0], *output.shape[-2:])[present]
        gt = target.value.to(output.device).float()[present]
        mask = valid_depth(gt)
        if self.align == "median":
            prediction = median_scaled(prediction, gt, mask)
        elif self.align == "scale_shift":  # in float64: the fit's sums run over every pixel
            prediction = align_scale_and_shift(prediction.double(), gt.double(), mask)
        prediction, gt = prediction[mask].double().clamp_min(1e-6), gt[mask].double()
        ratio = torch.maximum(prediction / gt, gt / prediction)
        self.pixels += gt.numel()
        self.within_delta1 += (ratio < 1.25).sum()
        self.abs_rel_sum += ((prediction - gt).abs() / gt).sum()
        self.squared_error_sum += ((prediction - gt) ** 2).sum()

    def compute(self) -> dict[str, float]:
        pixels = float(self.pixels)
        if pixels == 0:
            return {"delta1": float("nan"), "abs_rel": float("nan"), "rmse": float("nan")}
        return {"delta1": float(self.within_delta1) / pixels, "abs_rel": float(self.abs_rel_sum) / pixels,
                "rmse": (float(self.squared_error_sum) / pixels) ** 0.5}


class DepthTask(Task):
    """Depth per pixel (see the module docstring)."""

    name = "depth"
    primary_metric = "delta1"

    def __init__(self, *, loss: DepthLoss = "l1", align: DepthAlignment | None = None,
                 hidden_channels: int | None = None) -> None:
        """``align``: how the metric fits predictions to the ground truth (module docstring);
        ``None`` picks ``"scale_shift"`` for the ``"ssi"`` loss and ``"none"`` for ``"l1"``."""
        if loss not in ("l1", "ssi"):
            raise ConfigError(f"unknown depth loss '{loss}'; choose one of: l1, ssi")
        if align is not None and align not in ALIGNMENTS:
            raise ConfigError(f"unknown depth alignment '{align}'; choose one of: {', '.join(ALIGNMENTS)}")
        self.loss_kind = loss
        self.align: DepthAlignment = align or ("scale_shift" if loss == "ssi" else "none")
        self.hidden_channels = hidden_channels

    def build_head(self, spec: FeatureSpec) -> nn.Module:
        hidden = self.hidden_channels or spec.fpn_channels
        return PixelHead(spec.fpn_channels, 1, hidden, activation=nn.Softplus())

    def loss(self, output: Tensor, target: TaskBatch) -> dict[str, Tensor]:
        """Mean absolute error over the valid pixels of present images, after per-image
        least-squares alignment for ``"ssi"``; ``0 * output.sum()`` without any valid pixel."""
        if target.count == 0:
            return {"loss": output.sum() * 0.0}
        present = target.present.to(output.device)
        prediction = output.float().reshape(output.shape[0], *output.shape[-2:])[present]
        gt = target.value.to(output.device).float()[present]
        if gt.shape != prediction.shape:
            raise ValueError(f"depth target {tuple(gt.shape[-2:])} and output "
                             f"{tuple(prediction.shape[-2:])} differ in size")
        mask = valid_depth(gt)
        if not bool(mask.any()):
            return {"loss": output.sum() * 0.0}
        if self.loss_kind == "ssi":
            prediction = align_scale_and_shift(prediction, gt, mask)
        return {"loss": (prediction[mask] - gt[mask]).abs().mean()}

    def predict(self, output: Tensor) -> list[Tensor]:
        """``[B, 1, H, W]`` -> ``float32 [H, W]`` depth per image."""
        return list(output.detach().float().reshape(output.shape[0], *output.shape[-2:]).unbind(0))

    def to_source_size(self, prediction: Tensor, geometry: Geometry) -> Tensor:
        """``[H, W]`` over the window -> ``float32`` at the source size, padding dropped
        (:meth:`Geometry.unwarp_dense_to_source`)."""
        return geometry.unwarp_dense_to_source(prediction.reshape(prediction.shape[-2:]))

    def to_pseudo_label(self, prediction: Tensor, threshold: float | None = None) -> Tensor:
        """MuST sec. 3.2: "depth -> the teacher's output as is" (no threshold)."""
        return prediction.detach().float().reshape(prediction.shape[-2:]).clone()

    def metric(self) -> DepthMetric:
        return DepthMetric(self.align)

    def draw(self, image: np.ndarray, prediction: Tensor) -> np.ndarray:
        """Turbo colour map, normalized to the 2nd..98th percentile of the valid depths."""
        depth = fit_map(prediction.detach().float().cpu().reshape(prediction.shape[-2:]), image.shape[:2])
        depth = depth.numpy()
        valid = np.isfinite(depth) & (depth > 0)
        if not valid.any():
            return np.zeros_like(image, dtype=np.uint8)
        low, high = np.percentile(depth[valid], [2, 98])
        nearness = 1.0 - np.clip((depth - low) / max(high - low, 1e-6), 0.0, 1.0)
        colors = matplotlib.colormaps["turbo"](nearness)[..., :3]
        return np.where(valid[..., None], colors * 255.0, 0.0).round().astype(np.uint8)

    def transform_target(self, target: Tensor, geometry: Geometry) -> Tensor:
        """Nearest-neighbour warp, padding 0 (invalid); values unchanged (module docstring)."""
        return geometry.warp_dense(target, mode="nearest", fill=0.0)

    def collate(self, targets: list[Tensor | None]) -> TaskBatch:
        """``float32 [B, H, W]``; absent images are all 0 = invalid."""
        return collate_dense(targets, 0.0, torch.float32)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "loss": self.loss_kind, "align": self.align}
