"""Writing a domain of the world to disk in the formats users bring.

Layout of ``out/`` (``<key>`` = ``<domain>-<index:06d>``)::

    world.json                     what was generated (written last: its presence = complete)
    images/<category>/<key>.png    RGB, ImageFolder layout (folder = image-level class)
    annotations/instances.json     COCO detection JSON (boxes, areas, RLE instance masks)
    masks/<key>.png                8-bit semantic ids (index into segmentation_classes; 255 ignore)
    depth/<key>.png                16-bit depth in millimetres, 0 = invalid (NYU style)
    normals/<key>.npy              float16 [H, W, 3] unit camera-frame normals (DIODE style)
    instances/<key>.png            16-bit instance ids (0 = stuff)
    records/<key>.json             per-image summary; written after the image's files, so a
                                   record marks that image done (resume)

Every file is written under a temporary name and renamed, so an interrupted run leaves only
whole files and :func:`generate` picks up where it stopped. Images depend only on
``(domain, seed, index, size)``, so the resumed result is byte-identical to an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import io
import json
import multiprocessing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils
from tqdm import tqdm

from must.config import ConfigError
from must.files import write_atomic
from must.world.domains import DOMAINS, get_domain
from must.world.render import SEGMENTATION_CLASSES, STUFF, render_image
from must.world.scene import CATEGORIES, focal_length
from must.world.video import VIDEO_DOMAINS

FORMAT_VERSION = 1
IGNORE = 255
DEPTH_SCALE = 1000.0
"""Depth PNG units per metre (millimetres)."""


def image_key(domain: str, index: int) -> str:
    return f"{domain}-{index:06d}"


def png_bytes(array: np.ndarray) -> bytes:
    """PNG of a uint8 [H, W] / [H, W, 3] or uint16 [H, W] array (16-bit greyscale)."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _files(key: str, category: str) -> dict[str, str]:
    return {"image": f"images/{category}/{key}.png", "mask": f"masks/{key}.png",
            "depth": f"depth/{key}.png", "normals": f"normals/{key}.npy",
            "instances": f"instances/{key}.png"}


def write_image(out: Path, domain: str, seed: int, index: int, size: int) -> dict[str, Any]:
    """Renders image ``index`` and writes all its files, then its record; returns the record."""
    image = render_image(domain, seed, index, size)
    key = image_key(domain, index)
    files = _files(key, CATEGORIES[image.label])
    depth_mm = np.clip(np.round(image.depth * DEPTH_SCALE), 0, 65535).astype(np.uint16)
    payload = {"image": png_bytes(image.rgb), "mask": png_bytes(image.segmentation),
               "depth": png_bytes(depth_mm), "normals": npy_bytes(image.normals.astype(np.float16)),
               "instances": png_bytes(image.instances)}
    for name, data in payload.items():
        write_atomic(out / files[name], data)
    objects = []
    for box, label, instance in zip(image.boxes.tolist(), image.box_labels.tolist(),
                                    image.box_instances.tolist(), strict=True):
        mask = np.asfortranarray((image.instances == instance).astype(np.uint8))
        rle = mask_utils.encode(mask)
        objects.append({"bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]],
                        "category": int(label), "instance": int(instance),
                        "area": float(mask_utils.area(rle)),
                        "rle": {"size": rle["size"], "counts": rle["counts"].decode("ascii")}})
    record = {"key": key, "index": index, "label": image.label,
              "category": CATEGORIES[image.label], "files": files, "objects": objects}
    write_atomic(out / "records" / f"{key}.json", json.dumps(record).encode())
    return record


def read_record(path: Path) -> dict[str, Any] | None:
    """A JSON record written after the files of its item, or None when it is missing or torn."""
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, OSError):
        return None


def _done(out: Path, key: str) -> dict[str, Any] | None:
    """The record of ``key`` if it and every file it names exist, else None."""
    record = read_record(out / "records" / f"{key}.json")
    if record is None:
        return None
    return record if all((out / name).exists() for name in record["files"].values()) else None


def _work(job: tuple[str, str, int, int, int]) -> dict[str, Any]:
    out, domain, seed, index, size = job
    return write_image(Path(out), domain, seed, index, size)


def refuse_other_dataset(out: Path, identity: dict[str, Any], marker: Path) -> None:
    """A :class:`ConfigError` when ``out``'s ``world.json`` (a finished run) or ``marker`` (a
    started one) names another dataset than ``identity``: a resumed run never mixes two."""
    for path in (out / "world.json", marker):
        if path.exists():
            found = {name: json.loads(path.read_text()).get(name) for name in identity}
            if found != identity:
                raise ConfigError(f"{out} already holds another world dataset ({found}); "
                                  f"asked for {identity}: use another directory")


def render_missing(out: Path, identity: dict[str, Any], marker: Path, work: Callable[[Any], Any],
                   jobs: list[Any], workers: int, chunksize: int, desc: str, unit: str,
                   progress: bool) -> Iterator[Any]:
    """``work(job)`` for every job, in ``workers`` processes, yielding each result as it comes:
    ``marker`` claims ``out`` for ``identity`` first, and torn writes of an interrupted run go."""
    write_atomic(marker, json.dumps(identity).encode())
    for stale in out.rglob(".*.tmp"):
        stale.unlink()
    with tqdm(total=len(jobs), desc=desc, unit=unit, disable=not progress) as bar:
        for result in _run(work, jobs, workers, chunksize):
            bar.update()
            yield result


def _run(work: Callable[[Any], Any], jobs: list[Any], workers: int, chunksize: int) -> Iterator[Any]:
    if workers <= 1:
        yield from map(work, jobs)
        return
    # spawn: the parent may hold torch threads, which do not survive fork safely.
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        yield from pool.imap_unordered(work, jobs, chunksize=chunksize)


def coco_json(records: list[dict[str, Any]], size: int) -> dict[str, Any]:
    """COCO detection JSON: category id = class id + 1 (COCO reserves 0)."""
    images, annotations = [], []
    for record in records:
        image_id = record["index"] + 1
        images.append({"id": image_id, "file_name": record["files"]["image"], "width": size,
                       "height": size, "key": record["key"]})
        for obj in record["objects"]:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id,
                                "category_id": obj["category"] + 1, "bbox": obj["bbox"],
                                "area": obj["area"], "iscrowd": 0, "segmentation": obj["rle"]})
    categories = [{"id": k + 1, "name": name, "supercategory": "object"}
                  for k, name in enumerate(CATEGORIES)]
    return {"info": {"description": "must procedural world"}, "images": images,
            "annotations": annotations, "categories": categories}


def _manifest(domain: str, seed: int, count: int, size: int) -> dict[str, Any]:
    preset = get_domain(domain)  # a mixture's parts share one camera (asserted in the tests)
    focal = focal_length(preset.fov_degrees, size)
    return {
        "format_version": FORMAT_VERSION, "domain": domain, "seed": seed, "count": count,
        "size": size, "categories": list(CATEGORIES), "stuff": list(STUFF),
        "segmentation_classes": list(SEGMENTATION_CLASSES), "ignore_index": IGNORE,
        "camera_intrinsics": {"fx": focal, "fy": focal, "cx": size / 2, "cy": size / 2,
                              "K": [[focal, 0, size / 2], [0, focal, size / 2], [0, 0, 1]]},
        "depth_scale": DEPTH_SCALE, "normals_frame": "opencv camera: x right, y down, z forward",
        "preset": dataclasses.asdict(DOMAINS[domain]),
    }


_IDENTITY = ("format_version", "domain", "seed", "count", "size")


def is_complete(out: Path) -> bool:
    """Whether ``out`` holds a finished split: its annotations and ``world.json`` (written last);
    a video split (:mod:`must.world.clips`) has no COCO annotations, its ``world.json`` says so."""
    manifest = Path(out) / "world.json"
    if not manifest.exists():
        return False
    if (Path(out) / "annotations/instances.json").exists():
        return True
    try:
        return json.loads(manifest.read_text()).get("domain") in VIDEO_DOMAINS
    except (json.JSONDecodeError, OSError):
        return False


def generate(domain: str, out: Path, count: int, size: int = 64, seed: int = 0,
             progress: bool = True, workers: int = 1) -> Path:
    """Writes ``count`` images of ``domain`` to ``out`` (layout: module docstring). Re-running on a
    complete directory does nothing; an interrupted one resumes and renders only what is missing.
    A directory holding a different dataset (domain, seed, count, size) is refused."""
    out = Path(out)
    manifest = _manifest(domain, seed, count, size)
    identity = {name: manifest[name] for name in _IDENTITY}
    marker = out / "records" / "identity.json"
    refuse_other_dataset(out, identity, marker)
    keys = [image_key(domain, index) for index in range(count)]
    records = {index: _done(out, key) for index, key in enumerate(keys)}
    missing = [index for index, record in records.items() if record is None]
    if not missing and is_complete(out):
        return out
    jobs = [(str(out), domain, seed, index, size) for index in missing]
    for record in render_missing(out, identity, marker, _work, jobs, workers, 8, f"world {domain}",
                                 "img", progress):
        records[record["index"]] = record
    ordered = [records[index] for index in range(count)]
    write_atomic(out / "annotations/instances.json", json.dumps(coco_json(ordered, size)).encode())
    write_atomic(out / "world.json", json.dumps(manifest, indent=1).encode())
    return out
