"""Multi-task self-supervised learning (Doersch & Zisserman 2017, "Multi-task Self-Supervised
Visual Learning"), SPEC D1-D4: several pretext heads on one trunk, trained by alternating or
jointly, with lasso layer selection and harmonized inputs.

* D2, schedules: :class:`AlternateSchedule`: one task active per iteration, gradients of a whole
  cycle accumulated before the optimizer steps, so the update follows the *sum* of the task losses
  (sec. 3: "gradients are averaged across many iterations where different heads are active,
  meaning that the overall loss is a sum of the losses of different tasks");
  :class:`JointSchedule`: every task on every batch. A training loop does, per step ``s``::

      outputs = model(images, targets, tasks=schedule.active(s))
      loss = sum(task losses) + model.penalty()
      (loss * schedule.loss_scale).backward()
      if schedule.is_update_step(s): optimizer.step(); optimizer.zero_grad()

* D3, lasso: :class:`DoerschModel` feeds every head a :class:`~must.models.lasso.LassoMixing` of
  the trunk's stages C2..C5 (each projected to C5's width and resized to C5's size) in place of
  C5, so every head that reads C5 (relative position, exemplar, rotation, jigsaw, SimCLR, PIRL,
  classification...) reads its own learned combination. Pixel heads (colorization) read the FPN,
  which already mixes levels; the lasso does not change their input. The paper mixes the 23
  residual units of ResNet-101's block 3; :class:`LassoMixing` also takes those
  (``ResNetBackbone.forward_with_blocks``), the stage-level version is what ``Features`` offers.
* D4, harmonization: :func:`harmonize`: every input (image or view) converted to Lab, ``a`` and
  ``b`` dropped, ``L`` replicated to three channels (sec. 4.3: relative position's preprocessing
  replaced by colorization's). ``DoerschModel(harmonize=True)`` applies it to every trunk input.
* D1, motion segmentation (Pathak et al. 2017) needs video (motion masks from optical flow between
  frames); no reader here yields video, so the task is not provided. With a video source it would
  be one more :class:`SelfSupervisedTask`: frame -> segmentation target from the flow's motion mask.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from must.data.sample import TaskBatch
from must.models.features import Features, FeatureSpec
from must.models.lasso import LassoMixing
from must.models.running_statistics import running_statistics_frozen
from must.tasks.base import Task, by_name, require_known
from must.tasks.self_supervised.base import FeaturesFn, SelfSupervisedTask
from must.tasks.self_supervised.colorization import lightness_image


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


class Trunk(Protocol):
    def features(self, images: Tensor) -> Features: ...


def lasso_features(features: Features, lasso: LassoMixing, task: str) -> Features:
    """``features`` with C5 replaced by ``task``'s lasso combination of C2..C5 (C5's width and size)."""
    c5 = features.stages["c5"]
    mixed = lasso(list(features.stages.values()), task, size=(int(c5.shape[-2]), int(c5.shape[-1])))
    stages = OrderedDict((name, mixed if name == "c5" else value) for name, value in features.stages.items())
    return Features(features.image_size, stages, features.pyramid)


class DoerschModel(nn.Module):
    """``trunk`` (anything with ``features(images) -> Features``, e.g. a
    :class:`~must.models.multitask.MultiTaskModel`) + one head per task, optionally with lasso
    selection (``lasso_weight`` not ``None``) and harmonized inputs.

    ``forward(images, targets, tasks) -> {task: output}`` like ``MultiTaskModel``: self-supervised
    tasks run ``forward_views`` on their views, other tasks (evaluation tasks, SPEC D3 "also on
    evaluation tasks") their head on the features of ``images``. When evaluation tasks are in the
    pass, the trunk's batch-norm running averages follow their images only (the views normalize
    by their own batch without updating them); in a views-only pass they follow the views.
    """

    def __init__(self, trunk: nn.Module, spec: FeatureSpec, tasks: Sequence[Task],
                 lasso_weight: float | None = None, harmonize: bool = False) -> None:
        super().__init__()
        self.trunk = trunk
        self.tasks = by_name(list(tasks))
        self.heads = nn.ModuleDict()
        for task in tasks:
            head_name = task.head_name if isinstance(task, SelfSupervisedTask) else task.name
            if head_name not in self.heads:
                self.heads[head_name] = task.build_head(spec)
        self.lasso: LassoMixing | None = None
        if lasso_weight is not None:
            if len(spec.stage_channels) != 4:
                raise ValueError("the lasso needs the channels of C2..C5 (FeatureSpec.stage_channels)")
            self.lasso = LassoMixing(list(self.tasks), spec.stage_channels, spec.c5_channels, lasso_weight,
                                     unit_names=("c2", "c3", "c4", "c5"))
        self.harmonize = harmonize

    def features_for(self, task: str, track_statistics: bool = True) -> FeaturesFn:
        """The trunk as ``task`` sees it: harmonized input, lasso-mixed C5; with
        ``track_statistics=False`` its batch norms keep their running averages
        (:func:`~must.models.running_statistics.running_statistics_frozen`)."""
        def features(images: Tensor) -> Features:
            with running_statistics_frozen(self.trunk, frozen=not track_statistics):
                result = self.trunk.features(harmonize(images) if self.harmonize else images)
            return lasso_features(result, self.lasso, task) if self.lasso is not None else result
        return features

    def forward(self, images: Tensor | None, targets: Mapping[str, TaskBatch] | None = None,
                tasks: Sequence[str] | None = None) -> dict[str, Any]:
        names = list(self.tasks) if tasks is None else list(tasks)
        supervised = any(not isinstance(require_known(name, self.tasks, "task"), SelfSupervisedTask)
                         for name in names)
        outputs: dict[str, Any] = {}
        for name in names:
            task = self.tasks[name]
            target = targets.get(name) if targets else None
            if isinstance(task, SelfSupervisedTask):
                # Running averages follow the evaluation tasks' images when they are in the pass.
                features_fn = self.features_for(name, track_statistics=not supervised)
                outputs[name] = task.forward_views(self.heads[task.head_name], features_fn, target)
            else:
                if images is None:
                    raise ValueError(f"task '{name}' reads the batch images, but none were given")
                outputs[name] = self.heads[name](self.features_for(name)(images), target)
        return outputs

    def penalty(self) -> Tensor:
        """The lasso's L1 term (zero without a lasso)."""
        if self.lasso is None:
            return torch.zeros((), device=next(self.parameters()).device)
        return self.lasso.penalty()
