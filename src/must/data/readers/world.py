"""The embedded procedural world's directory, read through the standard formats.

Layout written by :mod:`must.world` (one directory per domain and split)::

    world.json                     {"categories": [...], "segmentation_classes": [...], ...}
    images/<category>/<key>.png    ImageFolder (classification)
    annotations/instances.json     COCO detection, file_name relative to this directory
    masks/<key>.png                8-bit segmentation ids, 255 = ignore
    depth/<key>.png                16-bit depth in millimetres
    normals/<key>.npy              float16 [H, W, 3] unit normals
    instances/<key>.png            16-bit instance ids

Keys are the image file stems; items are in key order. The classification label is the category
folder's position in ``world.json``'s ``categories`` (the world's own order, which is also the
COCO category id order, rather than sorted names). ``tasks`` picks what to load; empty = every
task the directory has. With explicit tasks an image is kept if it has at least one of them.
Files the readers do not know (``records/``) are left alone.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

from must.data.readers.coco import CocoBoxes, CocoImages
from must.data.readers.compose import ComposedDataset, TargetSource
from must.data.readers.dense_maps import (depth_source, instances_source, normals_source,
                                          segmentation_source)
from must.data.readers.errors import DataError
from must.data.readers.files import read_json
from must.data.readers.image_folder import scan_image_folder
from must.data.readers.unlabeled import scan_image_files
from must.errors import ConfigError

WORLD_PATHS = {
    "classification": "images",
    "detection": "annotations/instances.json",
    "segmentation": "masks",
    "depth": "depth",
    "normals": "normals",
    "instances": "instances",
}
"""Task -> where the world keeps its targets."""


def _stem(path: Path, root: Path) -> str:
    return path.stem


def _names(meta: dict[str, Any], field: str, path: Path) -> list[str]:
    """A list of names, given as strings or as COCO-style ``{"id", "name"}`` objects."""
    values = meta.get(field)
    if not isinstance(values, list) or not values:
        raise DataError(path, f"no '{field}' list")
    names = [v.get("name") if isinstance(v, dict) else v for v in values]
    if not all(isinstance(name, str) for name in names):
        raise DataError(path, f"'{field}' entries must be names or objects with a 'name'")
    return names


def available_world_tasks(root: Path) -> tuple[str, ...]:
    return tuple(task for task, relative in WORLD_PATHS.items() if (root / relative).exists())


SourceAndProblems = tuple[TargetSource, list[DataError]]


def _detection(root: Path, meta: dict[str, Any], meta_path: Path) -> SourceAndProblems:
    path = root / WORLD_PATHS["detection"]
    data = read_json(path)
    images = CocoImages(data, path, root, lambda name: PurePosixPath(name).stem)
    return CocoBoxes(data, images), images.problems


def _segmentation(root: Path, meta: dict[str, Any], meta_path: Path) -> SourceAndProblems:
    classes = _names(meta, "segmentation_classes", meta_path)
    return segmentation_source(root / WORLD_PATHS["segmentation"], classes), []


def _depth(root: Path, meta: dict[str, Any], meta_path: Path) -> SourceAndProblems:
    return depth_source(root / WORLD_PATHS["depth"]), []


def _normals(root: Path, meta: dict[str, Any], meta_path: Path) -> SourceAndProblems:
    return normals_source(root / WORLD_PATHS["normals"]), []


def _instances(root: Path, meta: dict[str, Any], meta_path: Path) -> SourceAndProblems:
    return instances_source(root / WORLD_PATHS["instances"]), []


ANNOTATION_SOURCES: dict[str, Callable[[Path, dict[str, Any], Path], SourceAndProblems]] = {
    "detection": _detection, "segmentation": _segmentation, "depth": _depth,
    "normals": _normals, "instances": _instances,
}
"""Task -> builder of its source; classification comes from the image folders themselves."""


class WorldDataset(ComposedDataset):
    """One world directory -> samples with the chosen tasks' targets."""

    def __init__(self, root: str | Path, tasks: tuple[str, ...] = (), *, skip_bad: bool = False,
                 limit: int | None = None) -> None:
        root = Path(root)
        unknown = [task for task in tasks if task not in WORLD_PATHS]
        if unknown:
            raise ConfigError(f"the world holds {', '.join(WORLD_PATHS)}; not {unknown}")
        meta_path = root / "world.json"
        meta = read_json(meta_path)
        chosen = tasks or available_world_tasks(root)
        for task in chosen:
            if not (root / WORLD_PATHS[task]).exists():
                raise DataError(root / WORLD_PATHS[task],
                                f"not found, so no {task} targets; this world has: "
                                f"{', '.join(available_world_tasks(root)) or 'nothing'}")
        sources: list[TargetSource] = []
        if "classification" in chosen:
            categories = _names(meta, "categories", meta_path)
            entries, labels, problems = scan_image_folder(root / "images", categories, _stem)
            sources.append(labels)
        else:
            entries, problems = scan_image_files(root / "images", _stem)
        for task in chosen:
            if task != "classification":
                source, source_problems = ANNOTATION_SOURCES[task](root, meta, meta_path)
                sources.append(source)
                problems += source_problems
        # Key order (= generation order) rather than folder order, so ``limit`` keeps a sample of
        # every category instead of the first categories only.
        entries = sorted(entries, key=lambda entry: entry.key)
        super().__init__(f"world:{root}", entries, sources, skip_bad=skip_bad, limit=limit,
                         require_target=bool(tasks), problems=problems)
