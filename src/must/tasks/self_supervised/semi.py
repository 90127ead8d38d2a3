"""What the semi-supervised methods share (FixMatch, FlexMatch, FreeMatch, SoftMatch, UDA, Mean
Teacher): a labeled task they wrap, a weak and a strong view of every image, and one rule per method
that turns the gradient-free prediction on the weak view into a target and a per-sample weight.

The unlabeled loss of every method is the same sum (FixMatch eq. 4 is the pattern)::

    l_u = lambda_u * 1/(mu B) * sum_b w(q_b) * l(target(q_b), p_model(y | A(u_b)))

``q_b`` is the softmax of the weak view's logits (Mean Teacher: of the weight-averaged teacher's),
``w`` the method's mask or weight (:meth:`SemiSupervisedTask.rule`), ``l`` cross-entropy on a hard
pseudo label, KL divergence on a soft target (UDA) or squared error (Mean Teacher); the mean runs
over all unlabeled samples, kept or not. The samples are images, or pixels for segmentation, where
the strong view stays aligned with the weak one (photometric operations and Cutout only).

State a rule accumulates (FlexMatch's per-image predictions, FreeMatch's and SoftMatch's moving
averages) lives in ``self.state`` (tensors), is updated only while gradients are on (training), is
averaged over DDP ranks so every rank holds the same, and is saved in the training checkpoint through
:meth:`state_dict` / :meth:`load_state_dict` (exact resume).

* views:  weak = horizontal flip + translation up to 12.5% ("flip-and-shift", FixMatch sec. 2.3);
          strong = RandAugment (torchvision.transforms.v2, magnitude drawn per image as in
          FixMatch's RA variant) then Cutout; for segmentation the weak view plus RandAugment's
          photometric operations and Cutout.
* head:   the wrapped task's head (``head_name`` = its name).
* metric: the mask rate (mean weight) and how often the strong view's prediction agrees with the
          target where the weight is positive.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.aggregation import MeanMetric
from torchvision.transforms import v2

from must import distributed
from must.data.noise import MAX_MAGNITUDE, PhotometricRandAugment
from must.errors import ConfigError
from must.data.sample import TaskBatch
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


def as_samples(values: Tensor) -> Tensor:
    """``[N, K]`` or ``[N, K, H, W]`` -> ``[samples, K]`` (pixels are samples for dense tasks)."""
    return values if values.dim() == 2 else values.movedim(1, -1).reshape(-1, values.shape[1])


def update_averages(state: dict[str, Tensor], batch: Mapping[str, Tensor], momentum: float) -> None:
    """``state[k] <- momentum * state[k] + (1 - momentum) * batch[k]`` for every statistic ``k`` of
    ``batch``, each averaged over DDP ranks: packed into one vector for one all-reduce per step
    instead of one per statistic (the same sums, so the same values)."""
    values = [value.detach().float() for value in batch.values()]
    means = distributed.all_reduce_mean(torch.cat([value.reshape(-1) for value in values]))
    for key, value, mean in zip(batch, values, means.split([value.numel() for value in values])):
        state[key] = momentum * state[key] + (1.0 - momentum) * mean.view_as(value)


class SemiSupervisedTask(SelfSupervisedTask):
    """A semi-supervised method on ``base`` (classification, or segmentation where ``dense_ok``);
    subclasses give :attr:`method` and :meth:`rule`, and may change :meth:`observe`,
    :meth:`consistency` and :meth:`extra_losses`."""

    method: str
    primary_metric = "mask_rate"
    dense_ok = True
    """Whether the rule is defined per pixel (a rule with per-image memory is not)."""
    uses_index = False
    """Whether the views carry the image's index in the training set (per-image memory)."""

    def __init__(self, base: Task, weight: float = 1.0, view_size: int = 64, num_ops: int = 2,
                 cutout: bool = True) -> None:
        kinds = (ClassificationTask, SegmentationTask) if self.dense_ok else (ClassificationTask,)
        if not isinstance(base, kinds):
            wraps = "classification or segmentation" if self.dense_ok else "classification"
            raise ConfigError(f"{self.method} wraps {wraps}, not '{base.name}'")
        self.base = base
        self.name = f"{self.method}_{base.name}"
        self.dense = isinstance(base, SegmentationTask)
        self.weight = weight
        self.view_size = view_size
        self.num_ops = num_ops
        self.use_cutout = cutout
        self.weak = weak_transform(view_size)
        self.state: dict[str, Tensor] = {}

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
        """``{"weak": uint8 [3, s, s], "strong": uint8 [3, s, s]}`` (+ ``"index"`` when used)."""
        square = square_view(image, self.view_size, generator)
        with seeded(generator):
            weak = self.weak(square)
            strong = self.strong(weak if self.dense else self.weak(square))
        views = {"weak": weak, "strong": strong}
        if self.uses_index:
            if index is None:
                raise ValueError(f"{self.name} needs the sample's dataset index (make_views(..., index=...))")
            views["index"] = torch.tensor(index)
        return views

    def forward_views(self, head: nn.Module, features_fn: FeaturesFn,
                      target: TaskBatch | None) -> dict[str, Tensor] | None:
        """``{"weak": detached logits, "strong": logits (+ "index")}``."""
        views = present_views(target)
        if views is None:
            return None
        count = views["weak"].shape[0]
        # One trunk pass over both views, as FixMatch's implementation does (shared BN statistics).
        logits = head(features_fn(to_unit(torch.cat([views["weak"], views["strong"]]))), None)
        output = {"weak": logits[:count].detach(), "strong": logits[count:]}
        if "index" in views:
            output["index"] = views["index"]
        return output

    def ensure_state(self, classes: int, device: torch.device) -> None:
        """Creates the state for ``classes`` outputs when missing; moves it to ``device``."""
        if not self.state:
            self.state = self.initial_state(classes)
        self.state = {key: value.to(device) for key, value in self.state.items()}

    def initial_state(self, classes: int) -> dict[str, Tensor]:
        """The rule's state before any batch (none by default)."""
        return {}

    def observe(self, probabilities: Tensor, output: dict[str, Tensor]) -> None:
        """Updates the state from one batch's weak-view ``probabilities [samples, K]``."""

    @abstractmethod
    def rule(self, probabilities: Tensor) -> tuple[Tensor, Tensor]:
        """``(target, weight)`` per sample from ``probabilities [samples, K]``: a hard label
        ``long [samples]`` or a soft target ``float [samples, K]``, and ``weight float [samples]``."""

    def consistency(self, strong: Tensor, target: Tensor) -> Tensor:
        """Per-sample loss of the strong view's logits on the target: cross-entropy."""
        return F.cross_entropy(strong, target, reduction="none")

    def extra_losses(self, strong: Tensor, target: Tensor, weight: Tensor) -> dict[str, Tensor]:
        """Terms added to the loss (FreeMatch's fairness); none by default."""
        return {}

    def view_loss(self, output: dict[str, Tensor]) -> dict[str, Tensor]:
        """``l_u`` of the module docstring, plus the method's extra terms."""
        probabilities = as_samples(F.softmax(output["weak"].float(), dim=1))
        strong = as_samples(output["strong"].float())
        self.ensure_state(probabilities.shape[1], probabilities.device)
        if torch.is_grad_enabled():  # training: the rule learns from this batch first
            self.observe(probabilities, output)
        target, weight = self.rule(probabilities)
        losses = {"consistency": self.weight * (self.consistency(strong, target) * weight).mean()}
        losses.update(self.extra_losses(strong, target, weight))
        return {"loss": sum(losses.values()), **losses, "mask_rate": weight.mean()}

    def state_dict(self) -> dict[str, Tensor]:
        """The rule's state on the CPU (saved in the training checkpoint)."""
        return {key: value.detach().cpu().clone() for key, value in self.state.items()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.state = {key: value.clone() for key, value in state.items()}

    def predict(self, output: dict[str, Tensor] | None) -> list[Any]:
        """The wrapped task's prediction on the weak view."""
        return [] if output is None else self.base.predict(output["weak"])

    def metric(self) -> SemiSupervisedMetric:
        return SemiSupervisedMetric(self)

    def draw(self, image: np.ndarray, prediction: Any) -> np.ndarray:
        return self.base.draw(image, prediction)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "kind": "self_supervised", "base": self.base.describe()}


class SemiSupervisedMetric:
    """Mean weight (``mask_rate``) and agreement of the strong view's prediction with the target
    where the weight is positive; the rule is applied without updating its state."""

    def __init__(self, task: SemiSupervisedTask) -> None:
        self.task = task
        self.mask_rate = MeanMetric()
        self.agreement = MeanMetric()

    def update(self, output: dict[str, Tensor] | None, target: TaskBatch) -> None:
        if output is None:
            return
        probabilities = as_samples(F.softmax(output["weak"].detach().float(), dim=1))
        self.task.ensure_state(probabilities.shape[1], probabilities.device)
        label, weight = self.task.rule(probabilities)
        label = label.argmax(dim=1) if label.dim() == 2 else label
        agree = as_samples(output["strong"].detach().float()).argmax(dim=1) == label
        kept = weight > 0
        self.mask_rate.to(weight.device)
        self.agreement.to(weight.device)
        self.mask_rate.update(weight.float().mean(), weight=weight.numel())
        if bool(kept.any()):
            self.agreement.update(agree[kept].float().mean(), weight=int(kept.sum()))

    def compute(self) -> dict[str, float]:
        agreement = float(self.agreement.compute()) if int(self.agreement.update_count) else 0.0
        return {"mask_rate": float(self.mask_rate.compute()), "agreement": agreement}

    def reset(self) -> None:
        self.mask_rate.reset()
        self.agreement.reset()
