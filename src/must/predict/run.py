"""``predict_dataset``: a trained model's predictions for every image of a dataset, every task's
files at each image's source size (formats: :mod:`must.predict.writers`).

One forward pass per batch for all tasks (MuST sec. 3.3: one student replaces the teachers).
Resumable: an image whose files all exist is skipped, so a rerun finishes an interrupted run.
Under ``torchrun --nproc_per_node=N`` rank ``r`` predicts images ``r, r + N, ...``; rank 0 then
merges the per-image detection and classification files. ``predict.json`` records what the run
is (model checksum, tasks, the dataset's keys): resuming into a directory holding another
model's predictions is an error, not a silent mix.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from must import config as config_lib
from must import distributed
from must.config import ConfigError
from must.data.readers import DatasetConfig, ReaderDataset, open_images
from must.predict.draw import draw_panel
from must.predict.images import FittedImages, category_ids, image_infos, image_loader
from must.predict.predictor import Predictor, as_float, load
from must.files import write_atomic
from must.predict.writers import (WRITERS, ImageInfo, WriteOptions, merge_classifications,
                                  merge_detections, outputs_of)
from must.tasks.segmentation import palette

RUN_NAME = "predict.json"


@dataclass(frozen=True)
class PredictConfig:
    data: DatasetConfig
    """The images: any reader format (``folder`` for a plain folder of photos)."""
    tasks: tuple[str, ...] = ()
    """Tasks to predict; empty = every task of the model."""
    batch_size: int = 8
    workers: int = 0
    """DataLoader processes decoding and fitting images (0 = in the main process)."""
    device: str = "auto"
    score_threshold: float | None = None
    """Detections below this score are not written; ``None`` keeps the model's detections."""
    top_k: int = 5
    """Classes per image in ``classification.jsonl``."""
    depth_npy: bool = False
    """Also write depth as ``.npy`` float32 metres."""
    draw: bool = False
    """Also draw every task's prediction per image (``draw/<key>.png``, the report's panels)."""
    skip_bad: bool = False
    """Count bad images in ``predict.json`` and go on, instead of stopping (also ``data.skip_bad``)."""

    def __post_init__(self) -> None:
        for name in ("batch_size", "top_k"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        if self.workers < 0:
            raise ConfigError(f"workers must be >= 0, got {self.workers}")
        if self.score_threshold is not None and not 0.0 <= self.score_threshold <= 1.0:
            raise ConfigError(f"score_threshold must be in [0, 1], got {self.score_threshold}")


@dataclass
class PredictSummary:
    images: int
    written: int
    """Images predicted by this run (the others were already written, or bad)."""
    skipped: list[dict[str, str]] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)


def predict_dataset(model: str | Path, config: PredictConfig, out: str | Path) -> PredictSummary:
    """Predicts every image of ``config.data`` with ``model`` into ``out``."""
    out = Path(out)
    device = distributed.pick_device(config.device)
    with distributed.joined_group(device):
        predictor = load(model, device, config.tasks or None)
        tasks = list(predictor.tasks)
        dataset = open_images(config.data, config.skip_bad, "predict")
        infos = image_infos(dataset, Path(config.data.root))
        options = _write_options(predictor, dataset, config)
        with distributed.main_process_first():
            _claim_directory(out, model, predictor, config, dataset, options)
        rank, world = distributed.rank(), distributed.world_size()
        pending = [i for i in range(rank, len(infos), world) if not _done(out, infos[i], tasks, config, options)]
        written, skipped = _predict(predictor, dataset, infos, pending, config, options, out)
        gathered = distributed.all_gather_objects((written, skipped))  # also waits for every rank
        summary = PredictSummary(len(infos), sum(part[0] for part in gathered),  # type: ignore[index]
                                 [entry for part in gathered for entry in part[1]])  # type: ignore[index]
        if distributed.is_main_process():
            summary.outputs = _finish(out, infos, tasks, summary, dataset, config, options)
        distributed.barrier()
    return summary


def _write_options(predictor: Predictor, dataset: ReaderDataset, config: PredictConfig) -> WriteOptions:
    names = predictor.loaded.class_names
    ids = category_ids(dataset, names["detection"])[0] if "detection" in names else []
    return WriteOptions(names, ids, config.score_threshold, config.top_k, config.depth_npy)


def _fingerprint(model: str | Path, predictor: Predictor, config: PredictConfig,
                 dataset: ReaderDataset) -> dict[str, Any]:
    """What the files depend on (not paths, workers or batch size): a resume must match it."""
    keys = hashlib.sha256("\n".join(dataset.keys).encode()).hexdigest()
    return {"checkpoint_sha256": predictor.loaded.checkpoint_sha256(), "tasks": predictor.tasks,
            "image_size": predictor.image_size, "images": len(dataset), "keys_sha256": keys,
            "score_threshold": config.score_threshold, "top_k": config.top_k,
            "depth_npy": config.depth_npy, "draw": config.draw}


def _claim_directory(out: Path, model: str | Path, predictor: Predictor, config: PredictConfig,
                     dataset: ReaderDataset, options: WriteOptions) -> None:
    """Writes ``predict.json``, ``images.json``, ``categories.json`` and ``classes.json`` (first
    run), or checks that the existing run is this one."""
    fingerprint = _fingerprint(model, predictor, config, dataset)
    if config_lib.refuse_other_run(out / RUN_NAME, fingerprint, "predictions of another run"):
        return
    if not distributed.is_main_process():
        return
    out.mkdir(parents=True, exist_ok=True)
    infos = image_infos(dataset, Path(config.data.root))
    _write_json(out / "images.json", [{"id": i.image_id, "file_name": i.file_name, "key": i.key}
                                      for i in infos])
    names = options.class_names
    if "detection" in names:
        _write_json(out / "categories.json",
                    [{"id": category, "name": name} for category, name
                     in zip(options.category_ids, names["detection"])])
    classes = {task: {"names": task_names} for task, task_names in names.items()}
    if "segmentation" in classes:
        classes["segmentation"]["palette"] = palette(len(names["segmentation"])).tolist()
    _write_json(out / "classes.json", classes)
    record = {"fingerprint": fingerprint, "model": str(model), "checkpoint": str(predictor.loaded.checkpoint),
              "kind": predictor.loaded.kind, "config": config_lib.to_dict(config)}
    _write_json(out / RUN_NAME, record)


def _done(out: Path, info: ImageInfo, tasks: list[str], config: PredictConfig,
          options: WriteOptions) -> bool:
    files = [name for task in tasks for name in outputs_of(task, info.key, options)]
    if config.draw:
        files.append(f"draw/{info.key}.png")
    return all((out / name).is_file() for name in files)


def _predict(predictor: Predictor, dataset: ReaderDataset, infos: list[ImageInfo], pending: list[int],
             config: PredictConfig, options: WriteOptions, out: Path) -> tuple[int, list[dict[str, str]]]:
    skip_bad = config.skip_bad or config.data.skip_bad
    images = FittedImages(dataset, predictor.image_size)
    written, skipped = 0, []
    with tqdm(total=len(pending), unit="img", desc="predict", dynamic_ncols=True,
              disable=not distributed.is_main_process()) as progress:
        for batch in image_loader(images, pending, config.batch_size, config.workers):
            for failed in (item for item in batch if item.error is not None):
                if not skip_bad:
                    raise failed.error  # type: ignore[misc]
                skipped.append({"key": infos[failed.index].key, "file": failed.error.path,
                                "problem": failed.error.problem})
            good = [item for item in batch if item.error is None]
            if good:
                windows = predictor.forward(torch.stack([as_float(item.image) for item in good]),
                                            predictor.tasks)
                for item, window in zip(good, windows):
                    _write_image(out, infos[item.index], predictor, item, window, config, options)
                written += len(good)
            progress.update(len(batch))
    return written, skipped


def _write_image(out: Path, info: ImageInfo, predictor: Predictor, item: Any, window: dict[str, Any],
                 config: PredictConfig, options: WriteOptions) -> None:
    if config.draw:  # drawn on the window the model saw, before mapping back
        draw_panel(out / f"draw/{info.key}.png", item.image, window, predictor.loaded, info.key)
    for task, value in predictor.to_source_size(window, item.geometry).items():
        WRITERS[task](out, info, value, options)


def _finish(out: Path, infos: list[ImageInfo], tasks: list[str], summary: PredictSummary,
            dataset: ReaderDataset, config: PredictConfig, options: WriteOptions) -> list[str]:
    """Rank 0, after every rank: the merged files and the run's counts in ``predict.json``."""
    outputs = []
    if "detection" in tasks:
        outputs.append(merge_detections(out, infos).name)
    if "classification" in tasks:
        outputs.append(merge_classifications(out, infos).name)
    record = json.loads((out / RUN_NAME).read_text())
    missing = sum(not _done(out, info, tasks, config, options) for info in infos)
    record["counts"] = {"images": len(infos), "predicted_now": summary.written,
                        "not_written": missing, "skipped_at_open": len(dataset.skipped)}
    record["skipped"] = summary.skipped + [{"file": path, "problem": problem}
                                           for path, problem in dataset.skipped]
    _write_json(out / RUN_NAME, record)
    return outputs


def _write_json(path: Path, data: Any) -> None:
    write_atomic(path, json.dumps(data, indent=2) + "\n")
