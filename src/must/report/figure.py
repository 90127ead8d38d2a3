"""Paper Figure 4: every prediction of one student, for a few images, side by side.

One row per image; columns: the student's class, its boxes, its segmentation overlay, its depth
map, all from a single forward pass of the student (MuST Figure 4: "a single model"), then the
surface normals of the model fine-tuned on normals (the student has no normals head: normals are
never a pre-training task, MuST sec. 4.2). Each panel is drawn by its task's ``draw``.

The picture is composed with PIL at a fixed layout, so its pixel size is known in advance
(:func:`figure_size`): a header strip with the column names, a label strip on the left naming each
image's source, and ``panel`` x ``panel`` pixels per cell.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from must.data.readers.files import IMAGE_SUFFIXES, list_files
from must.report.student import LoadedModel

COLUMNS = (("class", "classification"), ("boxes", "detection"), ("segmentation", "segmentation"),
           ("depth", "depth"))
"""(column title, student task) in the paper's order; normals come from another model."""
NORMALS_COLUMN = "normals*"
"""The asterisk: drawn by the fine-tuned normals model, not the student (said in the caption)."""
HEADER_HEIGHT = 28
LABEL_WIDTH = 120
GAP = 4
DEFAULT_SPLITS = {"pool": ("train", "val", "test"), "transfer": ("test", "val", "train")}
"""Where ``must demo`` keeps each image set (``data/<domain>/<split>``), in order of preference."""


@dataclass
class FigureImage:
    source: str
    """Which image set it comes from, e.g. ``"pool"`` or ``"transfer"``."""
    key: str
    image: np.ndarray
    """``uint8 [H, W, 3]``."""


@dataclass
class FigureResult:
    path: Path
    size: tuple[int, int]
    """(width, height) in pixels."""
    columns: list[str]
    rows: list[str]
    notes: list[str] = field(default_factory=list)


def figure_size(rows: int, columns: int, panel: int) -> tuple[int, int]:
    """(width, height) of a figure with ``rows`` images and ``columns`` panels per image."""
    return (LABEL_WIDTH + columns * (panel + GAP) + GAP, HEADER_HEIGHT + rows * (panel + GAP) + GAP)


def square(image: np.ndarray, size: int) -> np.ndarray:
    """Centre crop to a square, resized to ``size`` (the student's training resolution)."""
    height, width = image.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    cropped = Image.fromarray(np.ascontiguousarray(image[top:top + side, left:left + side, :3]))
    if side != size:
        cropped = cropped.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(cropped.convert("RGB"), dtype=np.uint8)


def forward(loaded: LoadedModel, images: np.ndarray, device: torch.device | str) -> dict[str, list[Any]]:
    """One forward pass of every head on a batch ``uint8 [N, H, W, 3]``; per task, one
    prediction per image (``Task.predict``)."""
    batch = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255.0).to(device)
    with torch.no_grad():
        outputs = loaded.model(batch)
    return {name: loaded.tasks[name].predict(output) for name, output in outputs.items()}


def scaled_boxes(prediction: dict[str, torch.Tensor], factor: float) -> dict[str, torch.Tensor]:
    """Boxes in the pixels of an image ``factor`` times larger (panels are drawn upscaled so text
    stays readable)."""
    return {**prediction, "boxes": prediction["boxes"].detach().float().cpu() * factor}


def draw_row(image: np.ndarray, predictions: dict[str, Any], loaded: LoadedModel,
             normals: tuple[LoadedModel, Any] | None, panel: int) -> list[np.ndarray]:
    """The panels of one image: each task's ``draw`` on the image upscaled to ``panel`` pixels."""
    big = np.asarray(Image.fromarray(image).resize((panel, panel), Image.Resampling.NEAREST))
    factor = panel / image.shape[1]
    panels = []
    for _, task in COLUMNS:
        if task in predictions:
            prediction = predictions[task]
            if task == "detection":
                prediction = scaled_boxes(prediction, factor)
            panels.append(loaded.tasks[task].draw(big.copy(), prediction))
    if normals is not None:
        model, prediction = normals
        panels.append(model.tasks["normals"].draw(big.copy(), prediction))
    return panels


def compose(rows: list[tuple[str, list[np.ndarray]]], titles: list[str], panel: int) -> Image.Image:
    """Lays the panels out on a white canvas with column titles and row labels."""
    width, height = figure_size(len(rows), len(titles), panel)
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    pen = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=15)
    small = ImageFont.load_default(size=12)
    for column, title in enumerate(titles):
        left = LABEL_WIDTH + GAP + column * (panel + GAP)
        shown = _fit(pen, title, font, panel)
        text_width = pen.textlength(shown, font=font)
        pen.text((left + (panel - text_width) / 2, 6), shown, fill=(30, 30, 30), font=font)
    for row, (label, panels) in enumerate(rows):
        top = HEADER_HEIGHT + GAP + row * (panel + GAP)
        source, _, key = label.partition("\n")
        pen.text((6, top + panel / 2 - 16), source, fill=(30, 30, 30), font=font)
        pen.text((6, top + panel / 2 + 2), _fit(pen, key, small, LABEL_WIDTH - 10), fill=(110, 110, 110),
                 font=small)
        for column, picture in enumerate(panels):
            left = LABEL_WIDTH + GAP + column * (panel + GAP)
            canvas.paste(Image.fromarray(picture).resize((panel, panel)), (left, top))
    return canvas


def _fit(pen: ImageDraw.ImageDraw, text: str, font: Any, width: float) -> str:
    """``text`` shortened from the left with an ellipsis until it fits ``width`` pixels."""
    while len(text) > 1 and pen.textlength(text, font=font) > width:
        text = "…" + text[2:]
    return text


def figure4(student: LoadedModel, images: list[FigureImage], out_png: str | Path,
            device: torch.device | str = "cpu", normals_model: LoadedModel | None = None,
            panel: int = 192) -> FigureResult:
    """Draws Figure 4 for ``images`` to ``out_png``: one student forward pass for all images."""
    if not images:
        raise ValueError("figure 4 needs at least one image")
    size = student.image_size
    batch = np.stack([square(item.image, size) for item in images])
    predictions = forward(student, batch, device)
    normals = forward(normals_model, batch, device)["normals"] if normals_model is not None else None
    titles = [title for title, task in COLUMNS if task in predictions]
    notes = [f"the student has no {task} head: its column is left out"
             for _, task in COLUMNS if task not in predictions]
    if normals is not None:
        titles.append(NORMALS_COLUMN)
    rows = []
    for index, item in enumerate(images):
        per_image = {task: values[index] for task, values in predictions.items()}
        extra = (normals_model, normals[index]) if normals_model is not None else None
        rows.append((f"{item.source}\n{item.key}", draw_row(batch[index], per_image, student, extra, panel)))
    canvas = compose(rows, titles, panel)
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(out_png)
    return FigureResult(out_png, canvas.size, titles, [label for label, _ in rows], notes)


def images_from_folder(source: str, root: Path, count: int) -> list[FigureImage]:
    """The first ``count`` images (by file name) under ``root`` (its ``images/`` folder for a
    dataset written by ``must world``)."""
    folder = root / "images" if (root / "images").is_dir() else root
    files = sorted((p for p in list_files(folder) if p.suffix.lower() in IMAGE_SUFFIXES),
                   key=lambda p: (p.name, str(p)))
    return [FigureImage(source, path.stem, np.asarray(Image.open(path).convert("RGB"), dtype=np.uint8))
            for path in files[:count]]


def images_from_world(domain: str, count: int, size: int, seed: int = 0) -> list[FigureImage]:
    """``count`` images of a domain of the procedural world, rendered on the spot."""
    from must.world import render_image

    return [FigureImage(domain, f"world {domain} #{index}", render_image(domain, seed, index, size).rgb)
            for index in range(count)]


def find_figure_images(run_dir: Path, count: int, size: int,
                       sources: dict[str, Path] | None = None) -> tuple[list[FigureImage], list[str]]:
    """``count`` images per source: the folders given, else ``run_dir/data/{pool,transfer}/<split>``
    as ``must demo`` writes them, else images of those world domains rendered on the spot."""
    images: list[FigureImage] = []
    notes: list[str] = []
    if sources:
        for source, root in sources.items():
            images += images_from_folder(source, Path(root), count)
        return images, notes
    for domain, splits in DEFAULT_SPLITS.items():
        folder = next((run_dir / "data" / domain / split for split in splits
                       if (run_dir / "data" / domain / split).is_dir()), None)
        if folder is not None:
            images += images_from_folder(domain, folder, count)
        else:
            notes.append(f"no data/{domain}/ in the run: its Figure 4 rows are procedural-world "
                         f"'{domain}' images rendered for the report")
            images += images_from_world(domain, count, size)
    return images, notes
