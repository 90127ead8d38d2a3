"""Multi-task self-supervised learning (Doersch & Zisserman 2017, "Multi-task Self-Supervised
Visual Learning"): several pretext heads on one trunk, trained by alternating or
jointly, with lasso layer selection and harmonized inputs.

* D2, schedules: :class:`AlternateSchedule`: one task active per iteration, gradients of a whole
  cycle accumulated before the optimizer steps, so the update follows the *sum* of the task losses
  (sec. 3: "gradients are averaged across many iterations where different heads are active,
  meaning that the overall loss is a sum of the losses of different tasks");
  :class:`JointSchedule`: every task on every batch. A training loop does, per step ``s``::

      active = schedule.active(s)
      outputs = model(images, targets, tasks=active)
      loss = sum(task losses + model.penalty(task) for task in active)
      (loss * schedule.loss_scale).backward()
      if schedule.is_update_step(s): optimizer.step(); optimizer.zero_grad()

* D3, lasso: :class:`DoerschMultiTaskModel` feeds every head a
  :class:`~must.models.lasso.LassoMixing` of the trunk's stages C2..C5 (each projected to C5's width and resized to C5's size) in place of
  C5, so every head that reads C5 (relative position, exemplar, rotation, jigsaw, SimCLR, PIRL,
  classification...) reads its own learned combination. Pixel heads (colorization, segmentation,
  depth, normals: ``reads_fused_p2``) read fused P2 instead, as their own learned, L1-penalized
  combination of P2..P7 (:class:`~must.models.lasso.PyramidLasso`, 1 per level at the start: the
  plain fused P2). The paper mixes the 23
  residual units of ResNet-101's block 3; :class:`LassoMixing` also takes those
  (``ResNetBackbone.forward_with_blocks``), the stage-level version is what ``Features`` offers.
* D4, harmonization: :func:`harmonize`: every input (image or view) converted to Lab, ``a`` and
  ``b`` dropped, ``L`` replicated to three channels (sec. 4.3: relative position's preprocessing
  replaced by colorization's). ``DoerschMultiTaskModel(harmonized=True)`` applies it to every
  trunk input.
* D1, motion segmentation (sec. 2, after Pathak et al. 2017): the fourth task,
  :class:`~must.tasks.self_supervised.motion_segmentation.MotionSegmentationTask`, one frame ->
  which pixels move, its masks derived from video (the world's ``video`` domain renders them
  exactly; ``video:DIR`` reads them). It trains beside the three image tasks, alternating or
  jointly, on the frames of the clips.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from must.models.features import Features
from must.models.lasso import LassoMixing, PyramidLasso, lasso_rows
from must.models.multitask import MultiTaskModel, reads_fused_p2
from must.tasks.base import require_known
from must.tasks.self_supervised.colorization import lightness_image
from must.train.weighting import Weighting


def harmonize(images: Tensor) -> Tensor:
    """Doersch & Zisserman sec. 4.3: keep only the Lab lightness, replicated to 3 channels.
    ``uint8`` or float ``[..., 3, H, W]`` in, same type out (see :func:`lightness_image`)."""
    return lightness_image(images)


class AlternateSchedule:
    """One task per iteration, in a seeded random order per cycle of ``len(tasks)`` iterations;
    the optimizer steps after ``cycles_per_update`` cycles. Stateless: ``active(step)`` depends on
    ``step`` and ``seed`` only, so a resumed run continues the same sequence."""

    def __init__(self, task_names: Sequence[str], cycles_per_update: int = 1, seed: int = 0,
                 shuffle: bool = True) -> None:
        if not task_names:
            raise ValueError("an alternating schedule needs at least one task")
        if cycles_per_update < 1:
            raise ValueError(f"cycles_per_update must be >= 1, got {cycles_per_update}")
        self.task_names = list(task_names)
        self.cycles_per_update = cycles_per_update
        self.seed = seed
        self.shuffle = shuffle

    @property
    def steps_per_update(self) -> int:
        return len(self.task_names) * self.cycles_per_update

    @property
    def loss_scale(self) -> float:
        """Accumulated over one update, the gradient is that of the sum of the task losses,
        averaged over the update's cycles."""
        return 1.0 / self.cycles_per_update

    def active(self, step: int) -> tuple[str, ...]:
        count = len(self.task_names)
        cycle, position = divmod(step, count)
        if not self.shuffle:
            return (self.task_names[position],)
        order = torch.randperm(count, generator=torch.Generator().manual_seed(self.seed * 1_000_003 + cycle))
        return (self.task_names[int(order[position])],)

    def is_update_step(self, step: int) -> bool:
        return (step + 1) % self.steps_per_update == 0


class JointSchedule:
    """Every task on every batch; the optimizer steps every iteration."""

    steps_per_update = 1
    loss_scale = 1.0

    def __init__(self, task_names: Sequence[str]) -> None:
        self.task_names = list(task_names)

    def active(self, step: int) -> tuple[str, ...]:
        return tuple(self.task_names)

    def is_update_step(self, step: int) -> bool:
        return True


Schedule = AlternateSchedule | JointSchedule
SCHEDULES: dict[str, Callable[..., Schedule]] = {"alternate": AlternateSchedule, "joint": JointSchedule}


def build_schedule(name: str, task_names: Sequence[str], **options: Any) -> Schedule:
    return require_known(name, SCHEDULES, "schedule")(task_names, **options)


def lasso_features(features: Features, lasso: LassoMixing, task: str) -> Features:
    """``features`` with C5 replaced by ``task``'s lasso combination of C2..C5 (C5's width and size)."""
    c5 = features.stages["c5"]
    mixed = lasso(list(features.stages.values()), task, size=(int(c5.shape[-2]), int(c5.shape[-1])))
    stages = OrderedDict((name, mixed if name == "c5" else value) for name, value in features.stages.items())
    return Features(features.image_size, stages, features.pyramid)


class DoerschMultiTaskModel(MultiTaskModel):
    """A :class:`MultiTaskModel` with Doersch & Zisserman's lasso (each task reads its own
    mixture of C2..C5 in place of C5, :func:`~must.tasks.self_supervised.doersch.lasso_features`)
    and harmonized inputs, in the checkpoint layout every stage loads (``lasso.*`` for the heads
    that read C5 and ``pyramid_lasso.*`` for the pixel heads, beside ``backbone.*``, ``fpn.*``,
    ``heads.*``)."""

    def __init__(self, model: MultiTaskModel, lasso_weight: float | None, harmonized: bool) -> None:
        super().__init__(model.backbone, model.fpn, model.heads, model.mean.flatten().tolist(),
                         model.std.flatten().tolist(), model.view_tasks, model.sync_bn)
        spec = self.spec
        pixel = [name for name in self.task_names if reads_fused_p2(self.head_of(name))]
        trunk = [name for name in self.task_names if name not in pixel]
        self.lasso = None if lasso_weight is None or not trunk else LassoMixing(
            trunk, spec.stage_channels, spec.c5_channels, lasso_weight, unit_names=("c2", "c3", "c4", "c5"))
        self.pyramid_lasso = None if lasso_weight is None or not pixel else PyramidLasso(
            pixel, spec.levels, lasso_weight)
        self.harmonized = harmonized

    @property
    def input_transform(self) -> str:  # type: ignore[override]
        return "harmonized" if self.harmonized else "rgb"

    @property
    def has_lasso(self) -> bool:
        return self.lasso is not None or self.pyramid_lasso is not None

    def record(self) -> dict[str, Any]:
        return {**super().record(), "lasso_rows": lasso_rows(self.lasso, self.pyramid_lasso)}

    def features(self, images: Tensor, pyramid: bool | None = None) -> Features:
        return super().features(harmonize(images) if self.harmonized else images, pyramid)

    def task_features(self, name: str, features: Features) -> Features:
        if self.lasso is not None and name in self.lasso.task_names:
            return lasso_features(features, self.lasso, name)
        if self.pyramid_lasso is not None and name in self.pyramid_lasso.task_names:
            return features.with_level_weights(self.pyramid_lasso.weights(name))
        return features

    def penalty(self, name: str) -> Tensor:
        """The L1 term of task ``name``'s row of its lasso matrix (zero without a lasso)."""
        for lasso in (self.lasso, self.pyramid_lasso):
            if lasso is not None and name in lasso.task_names:
                return lasso.task_penalty(name)
        return self.mean.new_zeros(())


class ScheduledWeighting(Weighting):
    """The configured weighting, with each task's loss plus its lasso penalty, scaled so that an
    optimizer update follows the schedule's objective: alternating, the engine averages the
    ``cycles x heads`` accumulated iterations, and ``factor`` = heads restores Doersch &
    Zisserman's *sum* of the task losses (sec. 3), the same objective joint training has."""

    def __init__(self, inner: Weighting, factor: float, penalty: Callable[[str], Tensor] | None) -> None:
        super().__init__(inner.task_names)
        self.inner = inner
        self.factor = factor
        self.penalty = penalty  # the model's method: not a submodule, its lasso is the model's

    def backward(self, losses: Mapping[str, Tensor], shared_parameters: Sequence[nn.Parameter],
                 scale: float = 1.0) -> Tensor:
        if self.penalty is not None:
            losses = {name: loss + self.penalty(name) for name, loss in losses.items()}
        return self.inner.backward(losses, shared_parameters, scale * self.factor)

    def weights(self) -> dict[str, float]:
        return self.inner.weights()

    def synchronize_gradients(self, shared_parameters: Sequence[nn.Parameter]) -> None:
        self.inner.synchronize_gradients(shared_parameters)
