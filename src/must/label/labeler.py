"""``label_dataset``: every teacher labels a shared image set (MuST sec. 3.2).

Rules (sec. 3.2, implemented by each task's ``to_pseudo_label``): classification -> the soft
probability vector (optionally its top-k); detection -> boxes with score >= 0.5; segmentation ->
argmax where the top probability >= 0.5, else ignore (255); depth -> the output as is. Thresholds
are configurable.

How it runs:

* DataLoader workers (where cores are free) decode each image and resize it to every teacher's
  input size (aspect ratio kept, padded: ``Geometry.fit``); the main process runs all teachers on
  each batch (optionally under bf16 autocast) and maps their predictions back to the source image
  with the same geometry: the padding dropped, dense maps resized (probabilities before the
  threshold), boxes rescaled. Pseudo labels are stored at the source size, which is what the
  student's reader returns for the image.
* Output: ``shard-%06d.tar`` holding dataset items ``[i * n, (i + 1) * n)``; each is written under
  a temporary name and renamed when complete, after a small ``shard-%06d.json`` beside it with its
  hash, count, statistics and skipped images. A rerun skips shards that exist, so an interrupted
  run resumes without redoing finished shards and ends byte-identical to an uninterrupted one.
  Only the shard being written is in memory: memory does not grow with the image count.
* Under ``torchrun --nproc_per_node=N`` rank ``r`` labels shards ``r, r + N, ...``; after a
  barrier rank 0 writes ``manifest.json`` from the per-shard files.
* ``labeling.json`` records what the run is (teacher hashes, thresholds, the dataset's keys):
  resuming into a directory made with other teachers or data is an error, not a silent mix.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import json
import os
import platform
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from tqdm import tqdm

from must import config as config_lib
from must import distributed
from must.data.geometry import Geometry
from must.data.readers import DatasetConfig, ReaderDataset, open_images
from must.files import remove_stale_temporaries, write_atomic
from must.label.loading import (LoadedBatch, ResizedImages, ShardPlan, make_image_loader,
                                plan_shards)
from must.label.manifest import (Manifest, ShardRecord, SkippedImage, TeacherEntry, add_to_sums,
                                 manifest_json, merge_sums, new_sums, summarize, write_manifest)
from must.label.open_teacher import check_supported, load_labeling_teacher
from must.label.shards import ShardWriter, encode_labels, shard_name
from must.label.teachers import LabelingTeacher, TeacherError
from must.train.engine import resolve_precision

Precision = Literal["auto", "fp32", "bf16"]
RUN_NAME = "labeling.json"
BARRIER_TIMEOUT_MINUTES = 24 * 60.0
"""Ranks wait for the slowest one at the end; torchrun ends the group if a rank dies."""


@dataclass(frozen=True)
class LabelConfig:
    teachers: tuple[str, ...]
    """Teacher directories (ours: ``teacher.json``; others: ``adapter.json``); ``TASK=DIR``
    also checks the teacher's task."""
    data: DatasetConfig
    """The image set to label: unlabeled (``folder``) or partially labeled, any format."""
    image_size: int | None = None
    """Input size for every teacher; ``None``: each teacher's own (its record's image size)."""
    batch_size: int = 32
    workers: int | None = None
    """DataLoader processes decoding and resizing images (0 = in the main process); None = one per
    core the teachers' torch threads leave free, at most 2 (:func:`default_workers`)."""
    images_per_shard: int = 1000
    thresholds: dict[str, float] = field(default_factory=dict)
    """Task -> pseudo-label threshold; tasks not listed use their own default (0.5)."""
    top_k: int | None = None
    """Store only the k most probable classes (classification's sparse form)."""
    precision: Precision = "auto"
    """``auto``: bf16 autocast on CUDA devices that support it, fp32 elsewhere."""
    device: str = "auto"
    skip_bad: bool = False
    """Record bad images in the manifest and go on, instead of stopping (also ``data.skip_bad``)."""

    def __post_init__(self) -> None:
        for name in ("batch_size", "images_per_shard"):
            if getattr(self, name) < 1:
                raise config_lib.ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        if self.workers is not None and self.workers < 0:
            raise config_lib.ConfigError(f"workers must be >= 0, got {self.workers}")
        if self.image_size is not None and self.image_size < 1:
            raise config_lib.ConfigError(f"image_size must be positive, got {self.image_size}")
        if self.top_k is not None and self.top_k < 1:
            raise config_lib.ConfigError(f"top_k must be positive, got {self.top_k}")
        for task, value in self.thresholds.items():
            if not 0.0 <= value <= 1.0:
                raise config_lib.ConfigError(f"thresholds.{task} must be in [0, 1], got {value}")


def label_dataset(config: LabelConfig, out: Path,
                  extra_teachers: Sequence[LabelingTeacher] = ()) -> Path:
    """Labels ``config.data`` with every teacher into ``out``; returns the manifest's path.

    ``extra_teachers`` are teacher objects built in Python (:class:`CallableTeacher`, adapters),
    labeling alongside the directories of ``config.teachers``.
    """
    out = Path(out)
    device = distributed.pick_device(config.device)
    with distributed.joined_group(device, BARRIER_TIMEOUT_MINUTES):
        rank, world = distributed.rank(), distributed.world_size()
        dataset = open_images(config.data, config.skip_bad, "label")
        teachers = _load_teachers(config, device, extra_teachers, dataset)
        entries = [_entry(teacher, config) for teacher in teachers]
        with distributed.main_process_first():
            _claim_directory(out, config, entries, dataset)
        shards = plan_shards(len(dataset), config.images_per_shard)
        pending = [shard for shard in shards[rank::world] if not _finished(out, shard)]
        _label_shards(config, out, teachers, dataset, pending, device)
        distributed.barrier()
        path = out / "manifest.json"
        if distributed.is_main_process():
            path = write_manifest(_manifest(config, out, entries, dataset, shards), out)
        distributed.barrier()
    return path


def _load_teachers(config: LabelConfig, device: torch.device, extra: Sequence[LabelingTeacher],
                   dataset: ReaderDataset) -> list[LabelingTeacher]:
    teachers = [load_labeling_teacher(spec, device, config.image_size) for spec in config.teachers]
    for teacher in extra:
        check_supported(teacher)
        if config.image_size is not None:
            teacher.input_size = config.image_size
        teachers.append(teacher.to(device))
    if not teachers:
        raise TeacherError("no teachers given: pass at least one teacher directory")
    tasks = [teacher.task.name for teacher in teachers]
    twice = sorted({task for task in tasks if tasks.count(task) > 1})
    if twice:
        raise TeacherError(f"several teachers for task(s) {twice}: one teacher per task "
                           f"(MuST sec. 3.1); teachers: {[t.name for t in teachers]}")
    unknown = sorted(set(config.thresholds) - set(tasks))
    if unknown:
        raise TeacherError(f"thresholds for {unknown}, which no teacher labels; teacher tasks: {tasks}")
    for teacher in teachers:
        _check_classes(teacher, dataset)
    return teachers


def _check_classes(teacher: LabelingTeacher, dataset: ReaderDataset) -> None:
    """A partially labeled set's real labels and the pseudo labels must name the same classes."""
    real = dataset.classes.get(teacher.task.name)
    if real is None or teacher.num_classes is None:
        return
    ours = teacher.class_names
    if len(real) != teacher.num_classes or (ours is not None and list(ours) != list(real)):
        raise TeacherError(
            f"teacher '{teacher.name}' predicts {teacher.task.name} classes "
            f"{ours or teacher.num_classes} but {dataset.name} labels {teacher.task.name} with "
            f"{list(real)}: real and pseudo labels would disagree (map the classes with an "
            "adapter's class_map, or use a teacher trained on these classes)")


def _threshold(teacher: LabelingTeacher, config: LabelConfig) -> float | None:
    if teacher.task.name in config.thresholds:
        return config.thresholds[teacher.task.name]
    default = {"detection": "pseudo_label_threshold", "segmentation": "threshold"}.get(teacher.task.name)
    return getattr(teacher.task, default) if default else None


def _entry(teacher: LabelingTeacher, config: LabelConfig) -> TeacherEntry:
    return config_lib.replace(teacher.entry(), threshold=_threshold(teacher, config),
                              input_size=teacher.input_size)


def _fingerprint(config: LabelConfig, entries: list[TeacherEntry], dataset: ReaderDataset) -> dict:
    """What the labels depend on (not paths, workers or batch size): resume must match it."""
    keys = hashlib.sha256("\n".join(dataset.keys).encode()).hexdigest()
    teachers = [{"task": e.task, "kind": e.kind, "checkpoint_sha256": e.checkpoint_sha256,
                 "threshold": e.threshold, "class_names": e.class_names, "num_classes": e.num_classes,
                 "input_size": e.input_size, "version": e.details.get("version")} for e in entries]
    return {"teachers": teachers, "images": len(dataset), "keys_sha256": keys,
            "images_per_shard": config.images_per_shard, "top_k": config.top_k,
            "precision": config.precision,
            # Inputs keep their aspect ratio (padded); labels of squashed inputs must not mix in.
            "input_geometry": "fit"}


def _claim_directory(out: Path, config: LabelConfig, entries: list[TeacherEntry],
                     dataset: ReaderDataset) -> None:
    """Writes ``labeling.json`` (first run) or checks that the existing one is this labeling."""
    out.mkdir(parents=True, exist_ok=True)
    fingerprint = _fingerprint(config, entries, dataset)
    path = out / RUN_NAME
    if not config_lib.refuse_other_run(path, fingerprint, "pseudo labels of another labeling") \
            and distributed.is_main_process():
        write_atomic(path, manifest_json({"fingerprint": fingerprint, "config": config_lib.to_dict(config)}))
        config_lib.save(config, out / "config.yaml")


def _finished(out: Path, shard: ShardPlan) -> bool:
    """A shard is done when its tar exists (renamed last, after its statistics file)."""
    name = shard_name(shard.index)
    return (out / name).is_file() and _sidecar(out, shard).is_file()


def _sidecar(out: Path, shard: ShardPlan) -> Path:
    return out / shard_name(shard.index).replace(".tar", ".json")


def _label_shards(config: LabelConfig, out: Path, teachers: list[LabelingTeacher],
                  dataset: ReaderDataset, shards: list[ShardPlan], device: torch.device) -> None:
    if not shards:
        return
    images = ResizedImages(dataset, [teacher.input_size for teacher in teachers])
    workers = default_workers() if config.workers is None else config.workers
    loader = iter(make_image_loader(images, shards, config.batch_size, workers,
                                    pin_memory=distributed.pins_memory(device)))
    precision = resolve_precision(config.precision, device, training=False)
    total = sum(shard.end - shard.start for shard in shards)
    skip_bad = config.skip_bad or config.data.skip_bad
    with tqdm(total=total, unit="img", desc="label", disable=not distributed.is_main_process(),
              dynamic_ncols=True) as progress:
        for shard in shards:
            _label_shard(config, out, teachers, shard, loader, device, precision, skip_bad, progress)
            release_freed_memory()


def _label_shard(config: LabelConfig, out: Path, teachers: list[LabelingTeacher], shard: ShardPlan,
                 loader: Iterator[LoadedBatch], device: torch.device, precision: str,
                 skip_bad: bool, progress: tqdm) -> None:
    path = out / shard_name(shard.index)
    remove_stale_temporaries(path)
    writer = ShardWriter(path)
    sums = {t.task.name: new_sums(t.task.name, t.num_classes) for t in teachers}
    skipped: list[SkippedImage] = []
    try:
        remaining = shard.end - shard.start
        while remaining > 0:
            batch = next(loader)
            remaining -= len(batch) + len(batch.errors)
            for failed in batch.errors:
                if not skip_bad:
                    raise failed.error  # type: ignore[misc]
                skipped.append(SkippedImage(failed.key, failed.error.path, failed.error.problem,
                                            path.name))
            labels = _pseudo_labels(teachers, batch, config, device, precision)
            for key, image_labels in zip(batch.keys, labels):
                writer.write(key, encode_labels(image_labels, config.top_k))
            for task, task_sums in sums.items():
                add_to_sums(task_sums, task, [image_labels[task] for image_labels in labels])
            progress.update(len(batch) + len(batch.errors))
        info = writer.finish()
    except BaseException:
        writer.abort()
        raise
    record = ShardRecord(info.name, info.sha256, info.bytes, info.samples, shard.start, shard.end)
    write_atomic(_sidecar(out, shard), manifest_json({"shard": config_lib.to_dict(record), "statistics": sums,
                                                      "skipped": config_lib.to_dict(skipped)}))
    writer.publish()


def release_freed_memory() -> None:
    """Hands the heap's free pages back to the system (glibc's ``malloc_trim(0)``); a no-op
    elsewhere. Why: nothing is kept from one shard to the next (only the shard being written is
    in memory), yet a labeling process's peak resident memory grew with the image count (~19 KB
    per image from 1,000 to 8,000 images); with glibc told to keep no free memory
    (``MALLOC_ARENA_MAX=1 MALLOC_TRIM_THRESHOLD_=0``) it stayed flat, so the growth is memory the
    finished shards freed and glibc kept in its heaps. Trimming once per shard returns it, at a
    cost of milliseconds per shard."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim() -> Any:
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return None  # musl, macOS, Windows: no malloc_trim
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


def default_workers() -> int:
    """Loader processes for cores the teachers leave free. On a CPU where torch's threads take
    every core a loader process competes with them and stalls the forward pass: on 2 cores,
    labeling ran at 0.82 of the bare forward with one worker and 0.86 with none."""
    return max(0, min(2, (os.cpu_count() or 1) - torch.get_num_threads()))


def _pseudo_labels(teachers: list[LabelingTeacher], batch: LoadedBatch, config: LabelConfig,
                   device: torch.device, precision: str) -> list[dict[str, Any]]:
    """One ``{task: pseudo label}`` per good image of ``batch``, at its source size."""
    labels: list[dict[str, Any]] = [{} for _ in batch.keys]
    if not batch.keys:
        return labels
    non_blocking = distributed.pins_memory(device)
    for teacher in teachers:
        images = batch.images[teacher.input_size].to(device, non_blocking=non_blocking)
        with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16,
                                                    enabled=precision == "bf16"):
            predictions = teacher.predict(images.float().div_(255.0))
        threshold = config.thresholds.get(teacher.task.name)
        for index, prediction in enumerate(predictions):
            geometry = Geometry.fit(batch.source_sizes[index], (teacher.input_size,) * 2)
            resized = teacher.task.to_source_size(prediction, geometry)
            target = teacher.task.to_pseudo_label(resized, threshold)
            labels[index][teacher.task.name] = _to_cpu(target)
    return labels


def _to_cpu(target: Any) -> Any:
    if isinstance(target, dict):
        return {name: value.cpu() for name, value in target.items()}
    return target.cpu()


def _manifest(config: LabelConfig, out: Path, entries: list[TeacherEntry], dataset: ReaderDataset,
              shards: list[ShardPlan]) -> Manifest:
    records, skipped = [], [SkippedImage(None, path, problem) for path, problem in dataset.skipped]
    totals = {e.task: new_sums(e.task, e.num_classes) for e in entries}
    for shard in shards:
        sidecar = _sidecar(out, shard)
        if not (out / shard_name(shard.index)).is_file() or not sidecar.is_file():
            raise RuntimeError(f"{out / shard_name(shard.index)}: shard not finished; rerun to resume")
        part = json.loads(sidecar.read_text())
        records.append(config_lib.from_dict(ShardRecord, part["shard"]))
        skipped += [config_lib.from_dict(SkippedImage, s) for s in part["skipped"]]
        totals = {task: merge_sums(totals[task], part["statistics"][task]) for task in totals}
    labeled = sum(record.samples for record in records)
    counts = {"dataset_images": len(dataset), "labeled": labeled, "skipped": len(skipped),
              "shards": len(records)}
    return Manifest(teachers=entries, data=config_lib.to_dict(config.data),
                    images_per_shard=config.images_per_shard, counts=counts, shards=records,
                    statistics={task: summarize(task, sums) for task, sums in totals.items()},
                    skipped=skipped, top_k=config.top_k, config=config_lib.to_dict(config))
