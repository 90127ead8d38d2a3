"""A trained model as a product: ``must.load(path).predict(images)`` (MuST sec. 3.3: one student
replaces all the teachers at inference).

``predict`` takes image files, PIL images, ``uint8 [H, W, 3]`` arrays, ``[3, H, W]`` tensors or a
``[B, 3, H, W]`` tensor batch (float in ``[0, 1]`` or uint8), one forward pass per batch for every
task, and returns one dict per image, every prediction at that image's source size:

* ``classification``: probabilities ``float32 [K]``;
* ``detection``: ``{"boxes": float32 [N, 4] xyxy pixels, "scores": [N], "labels": int64 [N]}``;
* ``segmentation``: class ids ``int64 [H, W]``;
* ``depth``: ``float32 [H, W]`` in the unit of the training targets (metres for our readers);
* ``normals``: unit vectors ``float32 [3, H, W]``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from must.config import ConfigError
from must.data.geometry import Geometry
from must.data.readers.files import load_image
from must.models.loading import LoadedModel, load_model
from must.predict.images import fit_image

ImageInput = str | Path | Image.Image | np.ndarray | Tensor


class Predictor:
    """A loaded model in eval mode and the tasks it predicts."""

    def __init__(self, loaded: LoadedModel, device: torch.device | str = "cpu") -> None:
        self.loaded = loaded
        self.device = torch.device(device)
        loaded.model.to(self.device).eval()

    @property
    def tasks(self) -> list[str]:
        return list(self.loaded.tasks)

    @property
    def image_size(self) -> int:
        return self.loaded.image_size

    def predict(self, images: ImageInput | Sequence[ImageInput], tasks: Sequence[str] | None = None,
                batch_size: int = 8) -> list[dict[str, Any]]:
        """One dict per image (module docstring), every task's prediction at its source size."""
        names = self.check_tasks(tasks)
        pictures = as_images(images)
        results: list[dict[str, Any]] = []
        for start in range(0, len(pictures), batch_size):
            fitted = [fit_image(image, self.image_size) for image in pictures[start:start + batch_size]]
            window = self.forward(torch.stack([as_float(image) for image, _ in fitted]), names)
            results += [self.to_source_size(prediction, geometry)
                        for prediction, (_, geometry) in zip(window, fitted)]
        return results

    def check_tasks(self, tasks: Sequence[str] | None) -> list[str]:
        if tasks is None:
            return self.tasks
        unknown = [name for name in tasks if name not in self.loaded.tasks]
        if unknown:
            raise ConfigError(f"tasks {unknown} are not tasks of {self.loaded.directory}; its tasks: "
                              f"{', '.join(self.tasks)}")
        return list(tasks)

    def forward(self, batch: Tensor, tasks: Sequence[str]) -> list[dict[str, Any]]:
        """``float [B, 3, S, S]`` in ``[0, 1]`` (fitted windows) -> per image, each task's
        prediction on the window (``Task.predict``): one trunk pass for all tasks."""
        with torch.inference_mode():
            outputs = self.loaded.model(batch.to(self.device), tasks=list(tasks))
            per_task = {name: self.loaded.tasks[name].predict(outputs[name]) for name in tasks}
        return [{name: per_task[name][index] for name in tasks} for index in range(batch.shape[0])]

    def to_source_size(self, prediction: dict[str, Any], geometry: Geometry) -> dict[str, Any]:
        """Each task's prediction on the window -> at the image's source size, on the CPU."""
        tasks = self.loaded.tasks
        return {name: _to_cpu(tasks[name].output_at_source_size(value, geometry))
                for name, value in prediction.items()}


def load(path: str | Path, device: torch.device | str = "cpu",
         tasks: Sequence[str] | None = None) -> Predictor:
    """Any model directory of ours (teacher, student, transfer cell) or its ``checkpoint.pt``."""
    return Predictor(load_model(path, device, tasks), device)


def as_images(images: ImageInput | Sequence[ImageInput]) -> list[Tensor]:
    """Every accepted input as ``[3, H, W]`` tensors (uint8 or float in ``[0, 1]``)."""
    if isinstance(images, Tensor) and images.dim() == 4:
        return [_checked(image) for image in images]
    if isinstance(images, (str, Path, Image.Image, np.ndarray, Tensor)):
        images = [images]
    return [image for item in images for image in _one(item)]


def _one(item: ImageInput) -> Iterable[Tensor]:
    if isinstance(item, (str, Path)):
        return [load_image(Path(item))]
    if isinstance(item, Image.Image):
        return [torch.from_numpy(np.asarray(item.convert("RGB")).copy()).permute(2, 0, 1)]
    if isinstance(item, np.ndarray):
        if item.dtype != np.uint8 or item.ndim != 3 or item.shape[-1] != 3:
            raise ConfigError(f"an image array must be uint8 [H, W, 3]; got {item.dtype} {item.shape}")
        return [torch.from_numpy(np.array(item, copy=True)).permute(2, 0, 1)]
    if isinstance(item, Tensor):
        return as_images(item) if item.dim() == 4 else [_checked(item)]
    raise ConfigError(f"cannot predict on a {type(item).__name__}: give image paths, PIL images, "
                      f"uint8 [H, W, 3] arrays or [B, 3, H, W] tensors")


def _checked(image: Tensor) -> Tensor:
    if image.dim() != 3 or image.shape[0] != 3 or not (image.dtype == torch.uint8 or image.is_floating_point()):
        raise ConfigError(f"an image tensor must be [3, H, W] uint8 or float in [0, 1]; got "
                          f"{image.dtype} {tuple(image.shape)}")
    return image.cpu()


def as_float(image: Tensor) -> Tensor:
    return image.float().div(255.0) if image.dtype == torch.uint8 else image.float()


def _to_cpu(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: item.detach().cpu() for key, item in value.items()}
    return value.detach().cpu()
