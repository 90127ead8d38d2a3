"""Self-supervised tasks: the :class:`~must.tasks.base.Task` interface for targets that the image
itself provides (one student trains on ground truth, pseudo labels and
pretext targets in one run).

A pretext task needs *new images* (two crops, four rotations, nine tiles...) that must go through
the shared trunk, so :class:`SelfSupervisedTask` extends ``Task`` with two hooks:

* ``make_views(image, generator, index=None) -> dict[str, Tensor]``: called by the loader once
  per sample for every enabled self-supervised task, on the *source* image (``uint8 [3, H, W]``,
  before the scale jitter, padding and crop of the supervised path: a view cut from that canvas
  would show its black padding, shared by every view of the image, a cue that solves rotation and
  jigsaw and makes SimCLR's two views agree on it); the result is stored as
  ``sample.targets[task.name]``. All randomness comes from ``generator`` (exact resume).
  ``index`` is the sample's position in the training set (the loader's concatenation of its
  datasets): PIRL and exemplar use it as the instance id, one distinct id per image. Views of a
  task have the same shapes for every image.
* ``forward_views(head, features_fn, target) -> output | None``: ``features_fn(images float
  [N, 3, h, w] in [0, 1]) -> Features`` is the model's ``features`` method (backbone + FPN); the
  task runs it on the views of the images that have them and applies ``head`` (which it built in
  ``build_head``) to the result. ``None`` when no image in the batch has views.

Wiring in ``MultiTaskModel.forward`` (the model owns the heads, the task only uses them)::

    for name in names:
        task = tasks[name]
        if isinstance(task, SelfSupervisedTask):
            outputs[name] = task.forward_views(self.heads[task.head_name], self.features,
                                               targets.get(name) if targets else None)
        else:
            outputs[name] = self.heads[name](features, targets.get(name) if targets else None)

``head_name`` is the task's own name except for FixMatch, which trains the head of the supervised
task it wraps (consistency on *that* classifier); the model builds one head per distinct
``head_name``. The other ``Task`` methods keep their meaning: ``collate`` stacks the view dicts,
``loss`` reads the output of ``forward_views``, ``transform_target`` is the identity (views do not
depend on the supervised path's geometry), and ``to_pseudo_label`` is refused (a teacher never
labels a pretext task).

Under DDP every rank must call ``forward_views`` and ``loss`` of every self-supervised task at
every step, also when its batch has no views: SimCLR gathers negatives and PIRL synchronizes its
memory bank across ranks, and those collectives need all ranks. Tasks that read C5 leave the FPN
without gradient, so DDP needs ``find_unused_parameters=True`` unless another task uses it.
"""

from __future__ import annotations

import contextlib
from abc import abstractmethod
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor, nn
from torchmetrics.aggregation import MeanMetric
from torchmetrics.classification import MulticlassAccuracy
from torchvision.transforms.v2 import functional as TF

from must.config import ConfigError
from must.data.geometry import Geometry
from must.data.sample import Sample, TaskBatch
from must.models.features import Features
from must.tasks.base import Task

FeaturesFn = Callable[[Tensor], Features]
"""The model's ``features`` method: ``float [N, 3, h, w]`` in ``[0, 1]`` -> :class:`Features`."""


class SelfSupervisedTask(Task):
    """A task whose targets are views made from the image (see the module docstring)."""

    makes_views = True

    @property
    def head_name(self) -> str:
        """Key of the head this task trains in the model's ``heads`` (its own name by default)."""
        return self.name

    @abstractmethod
    def make_views(self, image: Tensor, generator: torch.Generator,
                   index: int | None = None) -> dict[str, Tensor]:
        """``uint8 [3, H, W]`` source image -> this task's views and labels for one sample;
        ``index``: the sample's position in the training set."""

    def sample_views(self, sample: Sample, generator: torch.Generator,
                     index: int | None = None) -> dict[str, Tensor] | None:
        """What the loader calls: the views of one source ``sample``, ``make_views`` of its image.
        A task whose labels come with the image instead (motion segmentation: masks derived from
        video) reads them from ``sample.targets`` here; ``None`` = no views for this sample."""
        return self.make_views(sample.image, generator, index)

    def check_dataset_size(self, count: int) -> None:
        """Refuses a training set of ``count`` images this task cannot index (instance tasks:
        one slot per image); the loader calls it before the first batch."""

    @abstractmethod
    def forward_views(self, head: nn.Module, features_fn: FeaturesFn,
                      target: TaskBatch | None) -> dict[str, Tensor] | None:
        """Runs the shared trunk on the views of the present images and ``head`` on its features;
        the output carries whatever ``loss`` and ``metric`` need (labels included)."""

    @abstractmethod
    def view_loss(self, output: dict[str, Tensor]) -> dict[str, Tensor]:
        """``{"loss": ..., <parts>}`` from a non-empty ``forward_views`` output."""

    def loss(self, output: dict[str, Tensor] | None, target: TaskBatch) -> dict[str, Tensor]:
        """The task's loss; zero (without a graph) when no image of the batch had views."""
        if output is None:
            return {"loss": torch.zeros((), device=target.present.device)}
        return self.view_loss(output)

    def to_pseudo_label(self, prediction: Any, threshold: float | None = None) -> Any:
        raise NotImplementedError(
            f"'{self.name}' is self-supervised: its targets come from the image (make_views), "
            "a teacher never pseudo-labels them")

    def transform_target(self, target: Any, geometry: Geometry) -> Any:
        """Views are made from the already augmented image: nothing to warp."""
        return target

    def collate(self, targets: list[dict[str, Tensor] | None]) -> TaskBatch:
        """Stacks each view over the batch; absent images get zeros (never read: ``forward_views``
        keeps only present rows). With no views at all the value is ``{}``."""
        present = torch.tensor([target is not None for target in targets], dtype=torch.bool)
        reference = next((target for target in targets if target is not None), None)
        if reference is None:
            return TaskBatch(present, {})
        value = {}
        for name, like in reference.items():
            rows = [target[name] if target is not None else torch.zeros_like(like) for target in targets]
            shapes = {tuple(row.shape) for row in rows}
            if len(shapes) > 1:
                raise ValueError(f"{self.name}: view '{name}' has different shapes in one batch: "
                                 f"{sorted(shapes)}")
            value[name] = torch.stack(rows)
        return TaskBatch(present, value)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "kind": "self_supervised"}


class PretextClassificationTask(SelfSupervisedTask):
    """A pretext task solved by classification (rotation, jigsaw, relative position, exemplar):
    the output is ``{"logits": [N, K], "labels": [N]}``; loss = cross-entropy; metric = accuracy;
    a prediction is the predicted class index per view."""

    primary_metric = "accuracy"
    num_outputs: int

    def view_loss(self, output: dict[str, Tensor]) -> dict[str, Tensor]:
        return {"loss": F.cross_entropy(output["logits"].float(), output["labels"])}

    @staticmethod
    def classify_parts(head: nn.Module, features_fn: FeaturesFn, target: TaskBatch | None,
                       key: str) -> dict[str, Tensor] | None:
        """Every image's parts ``views[key]`` (``[B, P, 3, S, S]``) through the trunk as one batch
        of ``B * P`` images, then ``head`` (which regroups them per image) against ``label``."""
        views = present_views(target)
        if views is None:
            return None
        logits = head(features_fn(to_unit(views[key].flatten(0, 1))))
        return {"logits": logits, "labels": views["label"]}

    def predict(self, output: dict[str, Tensor] | None) -> list[Tensor]:
        if output is None:
            return []
        return list(output["logits"].detach().argmax(dim=-1).unbind(0))

    def metric(self) -> ViewAccuracy:
        return ViewAccuracy(self.num_outputs)

    def draw(self, image: np.ndarray, prediction: Tensor) -> np.ndarray:
        return write_text(image, f"{self.name}: {int(prediction)}")


class ViewAccuracy:
    """Top-1 accuracy (torchmetrics, micro average) of ``output["logits"]`` on ``output["labels"]``."""

    def __init__(self, num_classes: int) -> None:
        self.accuracy = MulticlassAccuracy(num_classes, average="micro")

    def update(self, output: dict[str, Tensor] | None, target: TaskBatch) -> None:
        if output is None:
            return
        self.accuracy.to(output["logits"].device)
        self.accuracy.update(output["logits"].detach().float(), output["labels"])

    def compute(self) -> dict[str, float]:
        return {"accuracy": float(self.accuracy.compute())}

    def reset(self) -> None:
        self.accuracy.reset()


class BatchMean:
    """A view task's metric that is one number per batch: the mean over batches, weighted by
    ``measure``'s weight and DDP-synced by torchmetrics' ``MeanMetric``, reported as ``name``.
    Subclasses say what a batch measures."""

    name = "accuracy"

    def __init__(self) -> None:
        self.mean = MeanMetric()

    def measure(self, output: dict[str, Tensor]) -> tuple[Tensor, int]:
        """``(value, weight)`` of one batch's output."""
        raise NotImplementedError

    def update(self, output: dict[str, Tensor] | None, target: TaskBatch) -> None:
        if output is None:
            return
        value, weight = self.measure(output)
        self.mean.to(value.device)
        self.mean.update(value.detach(), weight=weight)

    def compute(self) -> dict[str, float]:
        return {self.name: float(self.mean.compute())}

    def reset(self) -> None:
        self.mean.reset()


def present_views(target: TaskBatch | None) -> dict[str, Tensor] | None:
    """The views of the images that have them, or ``None`` when there are none."""
    if target is None or target.count == 0 or not target.value:
        return None
    present = target.present.to(next(iter(target.value.values())).device)
    return {name: value[present] for name, value in target.value.items()}


def to_unit(images: Tensor) -> Tensor:
    """``uint8`` views -> ``float32`` in ``[0, 1]`` (what ``features_fn`` takes)."""
    return images.float() / 255.0 if images.dtype == torch.uint8 else images.float()


def pooled_c5(features: Features) -> Tensor:
    """Global average pool of C5: ``[N, C5]``."""
    return features.c5.mean(dim=(-2, -1))


def mlp(sizes: list[int]) -> nn.Sequential:
    """Linear layers with ReLU between them (none after the last)."""
    layers: list[nn.Module] = []
    for index, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        if index > 0:
            layers.append(nn.ReLU(inplace=True))
        layers.append(nn.Linear(fan_in, fan_out))
    return nn.Sequential(*layers)


def resize_square(image: Tensor, size: int) -> Tensor:
    """``uint8 [3, H, W]`` -> ``uint8 [3, size, size]`` (antialiased; the aspect ratio is not kept:
    pretext views only need a fixed shape)."""
    return TF.resize(image, [size, size], antialias=True)


def square_view(image: Tensor, size: int, generator: torch.Generator) -> Tensor:
    """A random square of side ``min(H, W)`` of the image, resized to ``size``: the whole content
    of a square image, a random square part of a wider or taller one (the aspect ratio is kept,
    like the random crops of the pretext papers' ImageNet pipelines)."""
    height, width = int(image.shape[-2]), int(image.shape[-1])
    side = min(height, width)
    offset = int(torch.randint(0, max(height, width) - side + 1, (), generator=generator))
    top, left = (offset, 0) if height > width else (0, offset)
    return resize_square(image[..., top:top + side, left:left + side], size)


def instance_index(index: int | None, size: int, task: str, option: str) -> int:
    """The sample's instance id: its position ``index`` in the training set, distinct for every
    image (Dosovitskiy et al. 2014 sec. 2: one surrogate class per image; PIRL sec. 3.2: one
    memory-bank entry per image). ``size`` is the task's ``option`` (its number of classes or
    slots); an index outside it is refused rather than folded onto another image's slot."""
    if index is None:
        raise ValueError(f"{task} needs the sample's dataset index (make_views(..., index=...))")
    if not 0 <= index < size:
        raise ConfigError(f"{task}: image index {index} does not fit {option}={size}; set the task "
                          f"option {option} to at least the number of training images")
    return index


def check_instance_count(count: int, size: int, task: str, option: str) -> None:
    """Refuses ``count`` training images for an instance task with ``size`` slots (``option``)."""
    if count > size:
        raise ConfigError(f"{task}: {option}={size} is smaller than the {count} training images; set "
                          f"the task option {option} to at least {count} (one per image)")


@contextlib.contextmanager
def seeded(generator: torch.Generator) -> Iterator[None]:
    """Runs torchvision's random transforms (which draw from the global CPU generator) from a seed
    drawn from ``generator``, restoring the global state afterwards: views are reproducible from
    the loader's per-sample generator alone."""
    seed = int(torch.randint(0, 2**62, (), generator=generator))
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        yield


def write_text(image: np.ndarray, text: str) -> np.ndarray:
    """``text`` on a dark box in the top-left corner of an ``uint8 [H, W, 3]`` image."""
    canvas = Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8))
    painter = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=max(8, canvas.height // 16))
    _, _, right, bottom = painter.textbbox((2, 2), text, font=font)
    painter.rectangle((0, 0, right + 2, bottom + 2), fill=(0, 0, 0))
    painter.text((2, 2), text, fill=(255, 255, 255), font=font)
    return np.asarray(canvas, dtype=np.uint8).copy()


def draw_embedding(image: np.ndarray, embedding: Tensor, label: str, bars: int = 32) -> np.ndarray:
    """An embedding drawn as a strip of grey bars (its first ``bars`` entries, min-max scaled)
    under the image: an instance-level method predicts a vector, not a class."""
    values = embedding.detach().float().cpu().flatten()[:bars]
    span = (values.max() - values.min()).clamp_min(1e-8)
    levels = ((values - values.min()) / span * 255).round().to(torch.uint8).numpy()
    height, width = image.shape[:2]
    strip_height = max(4, height // 8)
    columns = np.repeat(levels, int(np.ceil(width / len(levels))))[:width]
    strip = np.broadcast_to(columns[None, :, None], (strip_height, width, 3))
    return write_text(np.concatenate([np.asarray(image, dtype=np.uint8), strip], axis=0), label)
