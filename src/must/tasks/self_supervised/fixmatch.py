"""FixMatch (Sohn et al. 2020, "FixMatch: Simplifying Semi-Supervised Learning with Consistency
and Confidence"), for classification and for semantic segmentation.

On an unlabeled image the model's prediction on a *weakly* augmented view becomes a pseudo label
where its confidence reaches ``threshold`` (tau = 0.95), and the model is trained to predict it on a
*strongly* augmented view (sec. 2.2, eq. 4)::

    l_u = lambda_u * 1/(mu B) * sum_b 1(max q_b >= tau) * H(argmax q_b, p_model(y | A(u_b)))

with ``q_b`` the (gradient-free) prediction on the weak view ``alpha(u_b)``; the mean runs over all
unlabeled images (or pixels), kept or not. The supervised term on labeled images is the wrapped
task's own loss on its own targets, in the same multi-task run.

* head:   the wrapped task's head (``head_name`` = its name): FixMatch trains *that* classifier.
* views:  weak = horizontal flip + translation up to 12.5% ("flip-and-shift", sec. 2.3); strong =
          RandAugment (torchvision.transforms.v2, magnitude drawn at random per image as in the
          paper's RA variant) followed by Cutout. For segmentation the pseudo label is per pixel, so
          both views must stay aligned: the strong view is the weak view plus RandAugment's
          *photometric* operations and Cutout (no shear, translation or rotation).
* metric: the mask rate (fraction of images / pixels whose pseudo label is kept) and how often
          the strong view's prediction agrees with the kept pseudo labels.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.aggregation import MeanMetric
from torchvision.transforms import v2

from must.data.noise import MAX_MAGNITUDE, PhotometricRandAugment
from must.data.sample import TaskBatch
from must.errors import ConfigError
from must.models.features import FeatureSpec
from must.tasks.base import Task
from must.tasks.classification import ClassificationTask
from must.tasks.segmentation import SegmentationTask
from must.tasks.self_supervised.base import (
    FeaturesFn,
    SelfSupervisedTask,
    present_views,
    seeded,
    square_view,
    to_unit,
)

def weak_transform(size: int) -> v2.Compose:
    """Flip, then a shift of up to 12.5% of ``size`` in each direction: reflection padding and a
    random crop back to ``size``, as FixMatch's implementation shifts (no black border)."""
    return v2.Compose([v2.RandomHorizontalFlip(),
                       v2.RandomCrop(size, padding=round(size / 8), padding_mode="reflect")])


def cutout() -> v2.RandomErasing:
    """One grey square of side up to half the image (FixMatch's Cutout, sec. 2.3)."""
    return v2.RandomErasing(p=1.0, scale=(0.02, 0.25), ratio=(1.0, 1.0), value=127)


class FixMatchMetric:
    def __init__(self) -> None:
        self.mask_rate = MeanMetric()
        self.agreement = MeanMetric()

    def update(self, output: dict[str, Tensor] | None, target: TaskBatch) -> None:
        if output is None:
            return
        confidence, pseudo = F.softmax(output["weak"].float(), dim=1).max(dim=1)
        kept = confidence >= output["threshold"]
        agree = output["strong"].detach().argmax(dim=1) == pseudo
        self.mask_rate.to(kept.device)
        self.agreement.to(kept.device)
        self.mask_rate.update(kept.float().mean(), weight=kept.numel())
        if bool(kept.any()):
            self.agreement.update(agree[kept].float().mean(), weight=int(kept.sum()))

    def compute(self) -> dict[str, float]:
        agreement = float(self.agreement.compute()) if int(self.agreement.update_count) else 0.0
        return {"mask_rate": float(self.mask_rate.compute()), "agreement": agreement}

    def reset(self) -> None:
        self.mask_rate.reset()
        self.agreement.reset()


class FixMatchTask(SelfSupervisedTask):
    """FixMatch on ``base`` (a :class:`ClassificationTask` or :class:`SegmentationTask`)."""

    primary_metric = "mask_rate"

    def __init__(self, base: Task, threshold: float = 0.95, weight: float = 1.0, view_size: int = 64,
                 num_ops: int = 2, cutout: bool = True) -> None:
        if not isinstance(base, (ClassificationTask, SegmentationTask)):
            raise ConfigError(f"FixMatch wraps classification or segmentation, not '{base.name}'")
        if not 0.0 <= threshold <= 1.0:
            raise ConfigError(f"threshold must be in [0, 1], got {threshold}")
        self.base = base
        self.name = f"fixmatch_{base.name}"
        self.dense = isinstance(base, SegmentationTask)
        self.threshold = threshold
        self.weight = weight
        self.view_size = view_size
        self.num_ops = num_ops
        self.use_cutout = cutout
        self.weak = weak_transform(view_size)

    @property
    def head_name(self) -> str:
        return self.base.name

    def build_head(self, spec: FeatureSpec) -> nn.Module:
        """The wrapped task's head (used when the model has no head of that name yet)."""
        return self.base.build_head(spec)

    def strong(self, image: Tensor) -> Tensor:
        """RandAugment with a random magnitude (FixMatch's RA), then Cutout; photometric-only for
        dense tasks. Draws from the global generator (run inside :func:`seeded`)."""
        magnitude = int(torch.randint(0, MAX_MAGNITUDE + 1, ()))  # torchvision's 31 magnitude bins
        if self.dense:
            image = PhotometricRandAugment(self.num_ops, magnitude)(image, torch.default_generator)
        else:
            image = v2.RandAugment(num_ops=self.num_ops, magnitude=magnitude)(image)
        return cutout()(image) if self.use_cutout else image

    def make_views(self, image: Tensor, generator: torch.Generator,
                   index: int | None = None) -> dict[str, Tensor]:
        """``{"weak": uint8 [3, s, s], "strong": uint8 [3, s, s]}``."""
        square = square_view(image, self.view_size, generator)
        with seeded(generator):
            weak = self.weak(square)
            strong = self.strong(weak if self.dense else self.weak(square))
        return {"weak": weak, "strong": strong}

    def forward_views(self, head: nn.Module, features_fn: FeaturesFn,
                      target: TaskBatch | None) -> dict[str, Tensor] | None:
        views = present_views(target)
        if views is None:
            return None
        count = views["weak"].shape[0]
        # One trunk pass over both views, as FixMatch's implementation does (shared BN statistics).
        logits = head(features_fn(to_unit(torch.cat([views["weak"], views["strong"]]))), None)
        return {"weak": logits[:count].detach(), "strong": logits[count:],
                "threshold": torch.tensor(self.threshold, device=logits.device)}

    def view_loss(self, output: dict[str, Tensor]) -> dict[str, Tensor]:
        """FixMatch eq. 4 (see the module docstring); images or pixels are the samples."""
        confidence, pseudo = F.softmax(output["weak"].float(), dim=1).max(dim=1)
        kept = (confidence >= self.threshold).float()
        per_sample = F.cross_entropy(output["strong"].float(), pseudo, reduction="none")
        return {"loss": self.weight * (per_sample * kept).mean(), "mask_rate": kept.mean()}

    def predict(self, output: dict[str, Tensor] | None) -> list[Any]:
        """The wrapped task's prediction on the weak view."""
        return [] if output is None else self.base.predict(output["weak"])

    def metric(self) -> FixMatchMetric:
        return FixMatchMetric()

    def draw(self, image: np.ndarray, prediction: Any) -> np.ndarray:
        return self.base.draw(image, prediction)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "kind": "self_supervised", "base": self.base.describe(),
                "threshold": self.threshold}
