"""A model card (``README.md``) for a teacher or student directory, generated from its record
(``teacher.json`` / ``student.json``) and the resolved ``config.yaml`` beside it: tasks and
classes, input size, what it was trained on (datasets, pseudo-label manifests with their
SHA-256), validation metrics, and the commands to predict with it and to export it."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from must import config as config_lib
from must.models.loading import ModelRecord, read_model_record
from must.files import file_sha256, write_atomic

CARD_NAME = "README.md"
SHOWN_CLASSES = 30


def write_model_card(directory: str | Path) -> Path:
    """Writes ``<directory>/README.md``; returns its path."""
    directory = Path(directory)
    record = read_model_record(directory)
    text = "\n".join(model_card(record, directory)) + "\n"
    path = directory / CARD_NAME
    write_atomic(path, text)
    return path


def model_card(record: ModelRecord, directory: Path) -> list[str]:
    kind = {"teacher": "Teacher (MuST sec. 3.1)", "student": "Multi-task student (MuST sec. 3.3)",
            "transfer": "Fine-tuned model (MuST sec. 3.5)"}[record.kind]
    model = record.model
    lines = [f"# {kind}: {', '.join(record.tasks)}", "",
             f"ResNet-FPN `{model.backbone}` (width {model.width}, FPN {model.fpn_channels} channels, "
             f"{model.norm} norm), input {record.image_size} x {record.image_size} pixels: images are "
             f"fitted with the aspect ratio kept (longer side {record.image_size}, padded) and every "
             f"prediction is mapped back to the source size. Normalization: mean {list(model.mean)}, "
             f"std {list(model.std)}.", "", "## Tasks", "", "| task | classes |", "| --- | --- |"]
    lines += [f"| {task} | {_classes(options)} |" for task, options in record.tasks.items()]
    lines += ["", "## Trained on", ""] + _training(record, directory)
    lines += ["", "## Validation metrics", ""] + _metrics(record.trained.metrics)
    lines += ["", "## Use", "", "```", f"must predict --model {directory} --data folder:PHOTOS "
              "--out predictions --draw",
              f"must export --model {directory} --format onnx --out exported", "```", "",
              "```python", "import must", f'model = must.load("{directory}")',
              'out = model.predict(["a.jpg", "b.jpg"])  # one dict per image, every task at source size',
              "```"]
    return lines


def _classes(options: Mapping[str, Any]) -> str:
    names = options.get("class_names")
    if names:
        shown = ", ".join(map(str, names[:SHOWN_CLASSES]))
        return f"{len(names)}: {shown}" + (", ..." if len(names) > SHOWN_CLASSES else "")
    return str(options["num_classes"]) if "num_classes" in options else "-"


def _training(record: ModelRecord, directory: Path) -> list[str]:
    trained = record.trained
    lines = [f"- steps: {_known(trained.steps)}, batch size: {_known(trained.batch_size)}, "
             f"learning rate: {_known(trained.learning_rate)}",
             f"- checkpoint: `{record.checkpoint.name}`, SHA-256 `{file_sha256(record.checkpoint)}`"]
    resolved = config_lib.read_yaml(directory / "config.yaml") if (directory / "config.yaml").is_file() else {}
    for source in resolved.get("sources") or [{"data": resolved.get("data")}]:
        if isinstance(source, Mapping) and isinstance(source.get("data"), Mapping):
            lines.append(f"- data: `{_dataset(source['data'])}`")
            for pseudo in source.get("pseudo") or []:
                manifest = Path(pseudo) / "manifest.json"
                digest = file_sha256(manifest) if manifest.is_file() else "missing"
                lines.append(f"  - pseudo labels: `{pseudo}` (manifest.json SHA-256 `{digest}`)")
    val = resolved.get("val")
    if isinstance(val, Mapping) and "format" in val:
        lines.append(f"- validation: `{_dataset(val)}`")
    elif isinstance(val, Mapping):
        lines += [f"- validation ({task}): `{_dataset(spec)}`" for task, spec in val.items()
                  if isinstance(spec, Mapping)]
    return lines


def _known(value: object) -> str:
    return "?" if value is None else str(value)


def _dataset(spec: Mapping[str, Any]) -> str:
    split = f" (split {spec['split']})" if spec.get("split") not in (None, "train") else ""
    return f"{spec.get('format')}:{spec.get('root')}{split}"


def _metrics(metrics: Mapping[str, Any]) -> list[str]:
    rows = []
    for name, value in metrics.items():
        if isinstance(value, Mapping):  # a student: task -> metrics
            rows += [f"| {name}/{key} | {item:.4f} |" for key, item in value.items()
                     if isinstance(item, (int, float))]
        elif isinstance(value, (int, float)):
            rows.append(f"| {name} | {value:.4f} |")
    return ["| metric | value |", "| --- | --- |", *rows] if rows else ["(none recorded)"]
