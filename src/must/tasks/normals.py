"""Surface normals (MuST sec. 4.2: a transfer task on DIODE, never a pre-training task; it tests
whether the student's features generalize to a task no teacher taught).

* head:         :class:`~must.models.heads.PixelHead` with three outputs, L2-normalized after
                upsampling: ``[B, 3, H, W]`` unit vectors (camera frame: x right, y down, z forward).
* loss:         over valid pixels (target norm > 0.5): ``"angular"`` = mean angle between
                prediction and target in radians (default), or ``"cosine"`` = mean ``1 - cos``.
                Angular is the default because ``1 - cos`` has slope ``sin(angle) -> 0`` near the
                answer, so it barely pushes errors of a few degrees, exactly the ones the primary
                metric (< 11.25 degrees) counts.
* pseudo label: the prediction as is, ``float32 [3, H, W]`` (no teacher produces these in MuST).
* metric:       fractions of valid pixels with angle error < 11.25, 22.5 and 30 degrees, and the
                mean angle error in degrees; primary ``"within_11_25"``.
* draw:         ``(n + 1) / 2`` as RGB; invalid pixels black.
* geometry:     nearest-neighbour warp (no averaging of directions), padding is the zero vector
                (invalid). Scaling and cropping move pixels but not the camera's axes, so the
                vectors are unchanged; a horizontal flip mirrors the scene, which negates x. They
                survive every aspect-preserving scale jitter, crop and flip; an aspect-changing
                resize would slant true normals slightly and is not corrected.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import Metric

from must.data.geometry import Geometry
from must.data.sample import TaskBatch
from must.errors import ConfigError
from must.models.features import FeatureSpec
from must.models.heads import PixelHead, UnitNormalize
from must.tasks.base import Task
from must.tasks.segmentation import collate_dense, fit_map

NormalsLoss = Literal["angular", "cosine"]
THRESHOLDS_DEGREES = {"within_11_25": 11.25, "within_22_5": 22.5, "within_30": 30.0}


def valid_normals(target: Tensor) -> Tensor:
    """``[N, 3, H, W]`` -> ``[N, H, W]``: pixels whose target is a (near) unit vector."""
    return target.norm(dim=1) > 0.5


def cosine(prediction: Tensor, target: Tensor) -> Tensor:
    """Cosine of the angle between ``[N, 3, H, W]`` fields, ``[N, H, W]``, safe for zero vectors."""
    return F.cosine_similarity(prediction, target, dim=1, eps=1e-8).clamp(-1.0, 1.0)


class NormalsMetric(Metric):
    """Angle-error statistics pooled over every valid pixel seen (torchmetrics states, summed
    across DDP processes)."""

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        for state in ("pixels", "angle_sum", *THRESHOLDS_DEGREES):
            self.add_state(state, default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, output: Tensor, target: TaskBatch) -> None:
        """``output``: the head's ``[B, 3, H, W]`` normals; ``target``: collated normals."""
        self.to(output.device)  # even with no target: DDP syncs states from every rank
        if target.count == 0:
            return
        present = target.present.to(output.device)
        prediction = output.detach().float()[present]
        gt = target.value.to(output.device).float()[present]
        angles = torch.rad2deg(torch.acos(cosine(prediction, gt)[valid_normals(gt)].double()))
        self.pixels += angles.numel()
        self.angle_sum += angles.sum()
        for name, limit in THRESHOLDS_DEGREES.items():
            setattr(self, name, getattr(self, name) + (angles < limit).sum())

    def compute(self) -> dict[str, float]:
        pixels = float(self.pixels)
        if pixels == 0:
            return {**{name: float("nan") for name in THRESHOLDS_DEGREES}, "mean_angle": float("nan")}
        result = {name: float(getattr(self, name)) / pixels for name in THRESHOLDS_DEGREES}
        result["mean_angle"] = float(self.angle_sum) / pixels
        return result


class NormalsTask(Task):
    """A unit normal per pixel (see the module docstring)."""

    name = "normals"
    primary_metric = "within_11_25"

    def __init__(self, *, loss: NormalsLoss = "angular", hidden_channels: int | None = None) -> None:
        if loss not in ("angular", "cosine"):
            raise ConfigError(f"unknown normals loss '{loss}'; choose one of: angular, cosine")
        self.loss_kind = loss
        self.hidden_channels = hidden_channels

    def build_head(self, spec: FeatureSpec) -> nn.Module:
        hidden = self.hidden_channels or spec.fpn_channels
        return PixelHead(spec.fpn_channels, 3, hidden, activation=UnitNormalize())

    def loss(self, output: Tensor, target: TaskBatch) -> dict[str, Tensor]:
        """Mean angle (radians) or mean ``1 - cos`` over the valid pixels of present images."""
        if target.count == 0:
            return {"loss": output.sum() * 0.0}
        present = target.present.to(output.device)
        prediction = output.float()[present]
        gt = target.value.to(output.device).float()[present]
        if gt.shape != prediction.shape:
            raise ValueError(f"normals target {tuple(gt.shape)} and output {tuple(prediction.shape)} differ")
        mask = valid_normals(gt)
        if not bool(mask.any()):
            return {"loss": output.sum() * 0.0}
        cosines = cosine(prediction, gt)[mask]
        if self.loss_kind == "cosine":
            return {"loss": (1.0 - cosines).mean()}
        # acos' slope is infinite at +-1: keep the argument just inside so the gradient stays finite
        limit = 1.0 - 1e-6
        return {"loss": torch.acos(cosines.clamp(-limit, limit)).mean()}

    def predict(self, output: Tensor) -> list[Tensor]:
        """``[B, 3, H, W]`` -> ``float32 [3, H, W]`` unit normals per image."""
        return list(output.detach().float().unbind(0))

    def to_pseudo_label(self, prediction: Tensor, threshold: float | None = None) -> Tensor:
        """The prediction as is (normals are never pseudo-labeled in MuST; kept for uniformity)."""
        return prediction.detach().float().clone()

    def metric(self) -> NormalsMetric:
        return NormalsMetric()

    def draw(self, image: np.ndarray, prediction: Tensor) -> np.ndarray:
        """``(n + 1) / 2`` as RGB, the usual normal-map colouring; zero vectors are black."""
        normals = fit_map(prediction.detach().float().cpu(), image.shape[:2]).permute(1, 2, 0).numpy()
        valid = np.linalg.norm(normals, axis=-1) > 0.5
        colors = (np.clip(normals, -1.0, 1.0) + 1.0) / 2.0 * 255.0
        return np.where(valid[..., None], colors, 0.0).round().astype(np.uint8)

    def transform_target(self, target: Tensor, geometry: Geometry) -> Tensor:
        """Nearest-neighbour warp, padding the zero vector; a flip negates the x component."""
        warped = geometry.warp_dense(target, mode="nearest", fill=0.0)
        if geometry.flip:
            warped = warped.clone()
            warped[0] = -warped[0]
        return warped

    def collate(self, targets: list[Tensor | None]) -> TaskBatch:
        """``float32 [B, 3, H, W]``; absent images are zero vectors = invalid."""
        return collate_dense(targets, 0.0, torch.float32, channels=(3,))

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "loss": self.loss_kind}

