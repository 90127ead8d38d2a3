"""Teachers the user already has: torchvision and timm models with weights from a local file
(MuST sec. 3.1), one small adapter per family.

Each adapter builds the architecture without downloading anything (``weights=None``,
``weights_backbone=None``, ``pretrained=False``), loads the state dict from a local file
(``torch.save(model.state_dict())``, strict: a file of another architecture or class count is an
error naming it), and maps the model's outputs to our task's predictions through a
:class:`ClassMapping` from the model's class names to ours:

* classification: softmax, probabilities of model classes mapped to one of ours are summed (merged),
  unmapped classes are dropped (the task's pseudo-label rule renormalizes what is left);
* detection: boxes of unmapped classes are dropped, labels renamed;
* segmentation: per-pixel probabilities merged like classification; unmapped classes are not
  renormalized away, so pixels the model gives to them fall below the confidence threshold and
  become "ignore" (sec. 3.2) rather than being forced into one of our classes.

A directory with an ``adapter.json`` (an :class:`AdapterSpec`) and the weight file is a teacher
directory like a ``must teach`` output.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from must import config as config_lib
from must.files import file_sha256
from must.label.manifest import TeacherEntry
from must.label.teachers import ADAPTER_NAME, LabelingTeacher, TeacherError, task_options
from must.models.config import IMAGENET_MEAN, IMAGENET_STD
from must.models.weights import CheckpointError, read_state_dict
from must.tasks import ClassificationTask, DetectionTask, SegmentationTask, Task

Family = Literal["torchvision_classification", "torchvision_detection",
                 "torchvision_segmentation", "timm_classification"]


@dataclass(frozen=True)
class AdapterSpec:
    """``adapter.json``: an existing model as a teacher."""

    family: Family
    architecture: str
    """torchvision builder name (``resnet18``, ``fasterrcnn_resnet50_fpn``, ``deeplabv3_resnet50``)
    or timm model name."""
    weights: str
    """The state dict file; relative paths are relative to the adapter's directory."""
    model_classes: tuple[str, ...]
    """The model's output classes in order (detection: without torchvision's background 0)."""
    classes: tuple[str, ...] = ()
    """Our task's classes; empty = the model's."""
    class_map: dict[str, str] = field(default_factory=dict)
    """Model class -> our class; model classes not listed map to ours of the same name or are
    dropped. Several model classes may map to one of ours (merged)."""
    input_size: int = 224
    name: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    """Extra builder arguments (detection: ``min_size``, ``max_size``, ``box_score_thresh``...)."""
    mean: tuple[float, float, float] | None = None
    """Input normalization (classification, segmentation); default ImageNet's / timm's own."""
    std: tuple[float, float, float] | None = None


@dataclass(frozen=True)
class ClassMapping:
    """``index[i]``: our class of model class ``i``, or -1 (dropped)."""

    source: tuple[str, ...]
    target: tuple[str, ...]
    index: tuple[int, ...]

    @staticmethod
    def build(source: Sequence[str], target: Sequence[str] = (),
              mapping: Mapping[str, str] | None = None) -> ClassMapping:
        source, target = tuple(source), tuple(target) or tuple(source)
        mapping = dict(mapping or {})
        for name in (source, target):
            if len(set(name)) != len(name):
                raise TeacherError(f"class names listed twice in {list(name)}")
        unknown = sorted(set(mapping) - set(source))
        if unknown:
            raise TeacherError(f"class_map names model classes {unknown} the model does not have; "
                               f"its classes: {list(source)}")
        missing = sorted(set(mapping.values()) - set(target))
        if missing:
            raise TeacherError(f"class_map maps to {missing}, not among our classes {list(target)}")
        position = {name: i for i, name in enumerate(target)}
        index = tuple(position.get(mapping.get(name, name), -1) for name in source)
        if all(i < 0 for i in index):
            raise TeacherError(f"no model class {list(source)[:8]} maps to any of {list(target)[:8]}")
        return ClassMapping(source, target, index)

    def merge(self, probabilities: Tensor, dim: int = 1) -> Tensor:
        """Sums probabilities of model classes along ``dim`` into our classes (dropped ones go)."""
        index = torch.tensor(self.index, device=probabilities.device)
        kept = (index >= 0).nonzero().flatten()
        shape = list(probabilities.shape)
        shape[dim] = len(self.target)
        merged = probabilities.new_zeros(shape)
        return merged.index_add_(dim, index[kept], probabilities.index_select(dim, kept))

    def labels(self, labels: Tensor) -> tuple[Tensor, Tensor]:
        """Model labels -> (our labels, keep mask)."""
        index = torch.tensor(self.index, device=labels.device)
        labels = labels.long()
        known = (labels >= 0) & (labels < len(self.index))  # e.g. a background label 0 - 1 = -1
        mapped = torch.where(known, index[labels.clamp(0, len(self.index) - 1)], -1)
        return mapped, mapped >= 0

    def describe(self) -> dict[str, Any]:
        return {"model_classes": list(self.source),
                "mapped": {s: self.target[i] for s, i in zip(self.source, self.index) if i >= 0},
                "dropped": [s for s, i in zip(self.source, self.index) if i < 0]}


class AdapterTeacher(LabelingTeacher):
    """An existing model + a class mapping; ``predict`` is the family's ``convert``."""

    def __init__(self, spec: AdapterSpec, model: nn.Module, task: Task, mapping: ClassMapping,
                 weights: Path, convert: Callable[[AdapterTeacher, Tensor], list[Any]],
                 mean: Sequence[float], std: Sequence[float]) -> None:
        self.spec = spec
        self.model = model.eval()
        self.task = task
        self.mapping = mapping
        self.weights = weights
        self.weights_sha256 = file_sha256(weights)
        self.convert = convert
        self.name = spec.name or spec.architecture
        self.input_size = spec.input_size
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)

    def normalized(self, images: Tensor) -> Tensor:
        return (images - self.mean.to(images.device)) / self.std.to(images.device)

    def predict(self, images: Tensor) -> list[Any]:
        return self.convert(self, images)

    def to(self, device: torch.device) -> AdapterTeacher:
        self.model.to(device)
        return self

    def entry(self) -> TeacherEntry:
        return TeacherEntry(
            name=self.name, task=self.task.name, kind=self.spec.family, input_size=self.input_size,
            checkpoint=str(self.weights), checkpoint_sha256=self.weights_sha256,
            class_names=self.class_names, num_classes=self.num_classes,
            task_options=task_options(self.task),
            details={"architecture": self.spec.architecture, "options": dict(self.spec.options),
                     **self.mapping.describe()})


def _classify(teacher: AdapterTeacher, images: Tensor) -> list[Tensor]:
    logits = teacher.model(teacher.normalized(images))
    probabilities = F.softmax(logits.float(), dim=1)
    return list(teacher.mapping.merge(probabilities, dim=1).unbind(0))


def _detect(teacher: AdapterTeacher, images: Tensor) -> list[dict[str, Tensor]]:
    """torchvision detectors take ``[0, 1]`` images, normalize and resize inside, and return
    boxes in input pixels with labels ``1..K`` (0 is their background)."""
    predictions = []
    for detection in teacher.model(list(images.float())):
        labels, keep = teacher.mapping.labels(detection["labels"] - 1)
        predictions.append({"boxes": detection["boxes"][keep].float(), "labels": labels[keep],
                            "scores": detection["scores"][keep].float()})
    return predictions


def _segment(teacher: AdapterTeacher, images: Tensor) -> list[Tensor]:
    logits = teacher.model(teacher.normalized(images))["out"]
    probabilities = F.softmax(logits.float(), dim=1)
    return list(teacher.mapping.merge(probabilities, dim=1).unbind(0))


def _torchvision_builder(module_name: str) -> Callable[[AdapterSpec, int, dict[str, Tensor]], nn.Module]:
    def build(spec: AdapterSpec, outputs: int, state: dict[str, Tensor]) -> nn.Module:
        import torchvision

        module = {"classification": torchvision.models,
                  "detection": torchvision.models.detection,
                  "segmentation": torchvision.models.segmentation}[module_name]
        known = torchvision.models.list_models(module=module)
        if spec.architecture not in known:
            raise TeacherError(f"'{spec.architecture}' is not a torchvision {module_name} model; "
                               f"choose one of: {', '.join(known)}")
        options: dict[str, Any] = {"weights": None, "num_classes": outputs}
        if module_name != "classification":
            options["weights_backbone"] = None
        if module_name == "segmentation" and any(k.startswith("aux_classifier.") for k in state):
            options["aux_loss"] = True  # the file has the auxiliary head: build it to load it
        return torchvision.models.get_model(spec.architecture, **{**options, **spec.options})

    return build


def _timm_builder(spec: AdapterSpec, outputs: int, state: dict[str, Tensor]) -> nn.Module:
    import timm

    try:
        return timm.create_model(spec.architecture, pretrained=False, num_classes=outputs,
                                 **spec.options)
    except RuntimeError as error:  # timm: "Unknown model (...)"
        close = timm.list_models(f"*{spec.architecture.split('.')[0][:8]}*")[:10]
        raise TeacherError(f"timm cannot build '{spec.architecture}' ({error}); similar: {close}") from None


def _timm_normalization(model: nn.Module) -> tuple[Sequence[float], Sequence[float]]:
    config = getattr(model, "pretrained_cfg", None) or {}
    return config.get("mean", IMAGENET_MEAN), config.get("std", IMAGENET_STD)


@dataclass(frozen=True)
class FamilyAdapter:
    task: str
    build: Callable[[AdapterSpec, int, dict[str, Tensor]], nn.Module]
    convert: Callable[[AdapterTeacher, Tensor], list[Any]]
    background_output: bool = False
    """torchvision detectors have one more output than classes (the background)."""


FAMILIES: dict[str, FamilyAdapter] = {
    "torchvision_classification": FamilyAdapter("classification", _torchvision_builder("classification"),
                                                _classify),
    "torchvision_detection": FamilyAdapter("detection", _torchvision_builder("detection"), _detect,
                                           background_output=True),
    "torchvision_segmentation": FamilyAdapter("segmentation", _torchvision_builder("segmentation"),
                                              _segment),
    "timm_classification": FamilyAdapter("classification", _timm_builder, _classify),
}
"""Adapter family -> how to build, load and read it (one explicit dict)."""


def _target_task(task: str, names: list[str]) -> Task:
    if task == "classification":
        return ClassificationTask(len(names), names)
    if task == "detection":
        return DetectionTask(len(names), names)
    return SegmentationTask(len(names), names)


def build_adapter(spec: AdapterSpec, directory: Path | None = None,
                  device: torch.device | str = "cpu") -> AdapterTeacher:
    """The teacher ``spec`` describes, weights loaded, in eval mode on ``device``."""
    if spec.family not in FAMILIES:
        raise TeacherError(f"unknown adapter family '{spec.family}'; choose one of: {', '.join(FAMILIES)}")
    family = FAMILIES[spec.family]
    weights = Path(spec.weights)
    if not weights.is_absolute() and directory is not None:
        weights = Path(directory) / weights
    mapping = ClassMapping.build(spec.model_classes, spec.classes, spec.class_map)
    try:
        _, state = read_state_dict(weights)
    except CheckpointError as error:
        raise TeacherError(f"adapter {spec.name or spec.architecture}: {error}") from None
    outputs = len(spec.model_classes) + int(family.background_output)
    model = family.build(spec, outputs, state)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        first = " ".join(str(error).split())[:600]
        raise TeacherError(f"{weights}: does not fit {spec.family} '{spec.architecture}' with "
                           f"{outputs} outputs (another architecture or class count?): {first}") from None
    if spec.family.startswith("timm"):
        mean, std = _timm_normalization(model)
    else:
        mean, std = IMAGENET_MEAN, IMAGENET_STD
    task = _target_task(family.task, list(mapping.target))
    teacher = AdapterTeacher(spec, model, task, mapping, weights, family.convert,
                             spec.mean or mean, spec.std or std)
    return teacher.to(torch.device(device))


def save_adapter_spec(spec: AdapterSpec, directory: Path) -> Path:
    """Writes ``adapter.json`` so ``directory`` can be passed as ``--teacher``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / ADAPTER_NAME
    path.write_text(json.dumps(config_lib.to_dict(spec), indent=2) + "\n")
    return path


def load_adapter(directory: Path, device: torch.device | str = "cpu") -> AdapterTeacher:
    path = Path(directory) / ADAPTER_NAME
    try:
        data = json.loads(path.read_text())
        spec = config_lib.from_dict(AdapterSpec, data)
    except (json.JSONDecodeError, config_lib.ConfigError) as error:
        raise TeacherError(f"{path}: {error}") from None
    return build_adapter(spec, directory, device)
