"""A trained model exported for other runtimes: ONNX (checked against onnxruntime) or TorchScript.

The exported graph takes a batch of images already fitted into the model's square window (the
longer side scaled to the window, top-left, zero padding: :meth:`must.data.geometry.Geometry.fit`),
either ``uint8 [B, 3, S, S]`` (normalized inside) or ``float32`` already normalized with the
model's mean and std; the batch size is dynamic. Outputs, on the window:

* ``classification``: probabilities ``[B, K]``;
* ``segmentation``: probabilities ``[B, C, S, S]``;
* ``depth``: ``[B, 1, S, S]``; ``normals``: unit vectors ``[B, 3, S, S]``;
* with ``trunk=True`` also the pyramid levels ``trunk.p2`` ... (for checking an export).

Detection is not exported: ``export.json`` names it under ``left_out`` with the reason (an
operator without an ONNX counterpart and per-image Python loops in the RPN and RoI heads).
``export.json`` describes the file: tasks, class names, input size, dtype, normalization, outputs.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from must.config import ConfigError
from must.models.features import Features
from must.models.loading import LoadedModel, load_model
from must.files import write_atomic, write_atomic_by_name

ExportFormat = Literal["onnx", "torchscript"]
InputKind = Literal["uint8", "float"]
OPSET = 18
DENSE_TASKS = ("segmentation", "depth", "normals")
EXPORTABLE = ("classification", *DENSE_TASKS)
"""Tasks whose heads are plain tensor programs; detection is tried separately."""


class ExportModule(nn.Module):
    """``images [B, 3, S, S] -> (one tensor per output name)``: trunk once, then every head."""

    def __init__(self, loaded: LoadedModel, tasks: Sequence[str], input_kind: InputKind,
                 trunk: bool = False) -> None:
        super().__init__()
        self.model = loaded.model
        self.tasks = list(tasks)
        self.input_kind = input_kind
        self.trunk = trunk
        self.levels = list(self.model.spec.levels) if trunk else []

    @property
    def output_names(self) -> list[str]:
        return [*self.tasks, *(f"trunk.{level}" for level in self.levels)]

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        model = self.model
        if self.input_kind == "uint8":
            images = (images.float() / 255.0 - model.mean) / model.std
        stages = model.backbone(images)
        features = Features((int(images.shape[-2]), int(images.shape[-1])), stages, model.fpn(stages))
        outputs = []
        for name in self.tasks:
            output = model.heads[name](model.task_features(name, features))
            outputs.append(F.softmax(output, dim=1) if name in ("classification", "segmentation") else output)
        return (*outputs, *(features.pyramid[level] for level in self.levels))


@dataclass
class ExportResult:
    path: Path
    description: dict[str, Any]
    left_out: dict[str, str] = field(default_factory=dict)


def export_model(model: str | Path, out: str | Path, export_format: ExportFormat = "onnx",
                 input_kind: InputKind = "uint8", tasks: Sequence[str] | None = None,
                 trunk: bool = False) -> ExportResult:
    """Writes ``model.onnx`` (or ``model.pt``) and ``export.json`` into the directory ``out``."""
    if export_format not in ("onnx", "torchscript"):
        raise ConfigError(f"unknown export format '{export_format}'; choose onnx or torchscript")
    if input_kind not in ("uint8", "float"):
        raise ConfigError(f"unknown input kind '{input_kind}'; choose uint8 or float")
    loaded = load_model(model, "cpu", tasks)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    chosen = [name for name in loaded.tasks if name in EXPORTABLE]
    left_out = {name: _why_left_out(name) for name in loaded.tasks if name not in EXPORTABLE}
    if not chosen and not trunk:
        raise ConfigError(f"{model}: no exportable head among {list(loaded.tasks)}: {left_out}")
    module = ExportModule(loaded, chosen, input_kind, trunk).eval()
    example = _example(loaded.image_size, input_kind)
    path = out / ("model.onnx" if export_format == "onnx" else "model.pt")
    if export_format == "onnx":
        _to_onnx(module, example, path)
    else:
        with torch.no_grad():
            traced = torch.jit.trace(module, example, strict=False)
        write_atomic_by_name(path, lambda temporary: traced.save(str(temporary)))
    description = describe(loaded, module, path, export_format, left_out)
    text = json.dumps(description, indent=2) + "\n"
    write_atomic(out / "export.json", text)
    return ExportResult(path, description, left_out)


def _why_left_out(task: str) -> str:
    if task == "detection":
        return ("not exportable at opset 18: the RoI pooling (must.tasks.roi_align) counts boxes per "
                "image with aten::bincount, which has no ONNX operator, and torchvision's RPN and RoI "
                "heads loop over the images of a batch in Python (a traced graph would fix the batch "
                "size); run detection with `must predict` or `must.load(...).predict`")
    return f"the '{task}' head has no export"


def _example(size: int, input_kind: InputKind) -> Tensor:
    generator = torch.Generator().manual_seed(0)
    if input_kind == "uint8":
        return torch.randint(0, 256, (2, 3, size, size), dtype=torch.uint8, generator=generator)
    return torch.randn(2, 3, size, size, generator=generator)


def _to_onnx(module: ExportModule, example: Tensor, path: Path) -> None:
    """torch.export's ONNX exporter (onnxscript), the batch dimension left dynamic."""
    from torch.export import Dim

    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as error:
        raise ConfigError(f"ONNX export needs the export extra ({error.name} is not installed): "
                          "pip install 'must[export]'") from None

    def write(temporary: Path) -> None:
        with torch.no_grad():
            torch.onnx.export(module, (example,), str(temporary), input_names=["images"],
                              output_names=module.output_names, opset_version=OPSET, dynamo=True,
                              dynamic_shapes={"images": {0: Dim("batch", min=1, max=65536)}},
                              verbose=False)

    write_atomic_by_name(path, write)


def describe(loaded: LoadedModel, module: ExportModule, path: Path, export_format: str,
             left_out: dict[str, str]) -> dict[str, Any]:
    size = loaded.image_size
    shapes = {"classification": ["batch", "K"], "segmentation": ["batch", "C", size, size],
              "depth": ["batch", 1, size, size], "normals": ["batch", 3, size, size]}
    meaning = {"classification": "class probabilities", "segmentation": "per-pixel class probabilities",
               "depth": "depth in the unit of the training targets (metres for our readers)",
               "normals": "unit surface normals (x, y, z)"}
    outputs = {name: {"shape": shapes.get(name, ["batch", "channels", "h", "w"]),
                      "meaning": meaning.get(name, "pyramid level features")}
               for name in module.output_names}
    mean, std = loaded.config.mean, loaded.config.std
    return {
        "format": export_format, "file": path.name, "opset": OPSET if export_format == "onnx" else None,
        "source": str(loaded.directory), "checkpoint": str(loaded.checkpoint),
        "checkpoint_sha256": loaded.checkpoint_sha256(), "tasks": module.tasks, "left_out": left_out,
        "class_names": {name: names for name, names in loaded.class_names.items() if name in module.tasks},
        "image_size": size,
        "input": {"name": "images", "dtype": "uint8" if module.input_kind == "uint8" else "float32",
                  "shape": ["batch", 3, size, size], "layout": "NCHW, RGB",
                  "values": ("0..255" if module.input_kind == "uint8"
                             else "(x / 255 - mean) / std, x the 0..255 pixel values"),
                  "resize": (f"longer side scaled to {size}, image at the top-left, the rest padded "
                             "with 0 (before normalizing); map outputs back by cutting the image's "
                             "region and resizing it to the source size")},
        "normalization": {"mean": list(mean), "std": list(std)},
        "outputs": outputs,
    }
