"""Labeling efficiency: end-to-end throughput of ``label_dataset`` against the bare forward pass
of the same teachers on preloaded tensors (MuST sec. 3.2: the teachers label a
large pool; the model should never wait on data).

Both sides run the same teachers on the same 512 images with the same batch size and threads, in
one process, and both start from the teacher directories on disk. Each round:

* **bare**: opens the teachers from their directories (``load_labeling_teacher``, the labeler's
  own call: build, read the checkpoint, load the weights), then every teacher's ``predict`` on
  every batch of images already decoded, resized and stacked in memory (``uint8 -> float / 255``
  included). Nothing else: no files read or written.
* **label**: one whole ``label_dataset`` run into a fresh directory: opening the image set
  (listing and probing the files), opening the same teachers, hashing their checkpoints and
  claiming the directory, decoding each PNG and fitting it to the input size (in DataLoader
  workers where cores are free, else in this process), the same ``predict``, mapping predictions
  back to the source size, the pseudo-label rules, per-shard statistics, encoding and writing the
  tar shards and their sidecars, the manifest.

So the ratio bare / label measures exactly the labeler's own work on top of opening the teachers
and running them; opening the teachers is on both sides because a bare forward needs teachers
too (before, only the labeling side paid it: 0.15 s of CPU for the four demo teachers, as much
as the labeler's decoding of all 512 images). The rounds run in a
shuffled order, and the figure is the median of the per-round ratios with its quartiles.
Target: median >= 0.9 and lower quartile >= 0.85 (labeling does strictly more work than the bare
forward, so a ratio above 1 is noise).

    python -m benchmarks.label_efficiency                      # 4 demo-size teachers, 512 images
    python -m benchmarks.label_efficiency --count 200 --width 0.125
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import (CACHE, TASK_OPTIONS, interleave, median, model_config, ratio_summary,
                               trained_like)
from must.data.geometry import Geometry
from must.data.readers import DatasetConfig, open_dataset
from must.data.readers.files import load_image
from must.label import LabelConfig, label_dataset
from must.label.labeler import default_workers
from must.label.open_teacher import load_labeling_teacher
from must.label.teachers import LabelingTeacher
from must.models import ModelConfig, build_model
from must.tasks import build_task
from must.files import CHECKPOINT_NAME
from must.label.teachers import TeacherRecord, save_record
from must.world import generate

TARGET = 0.9
LOWER_QUARTILE_TARGET = 0.85
WARMUP = 1
"""Untimed rounds before the timed ones (each side runs once)."""


def make_teachers(root: Path, model: ModelConfig, image_size: int) -> list[Path]:
    """One random-weight teacher per MuST task (speed does not depend on the weights' values,
    except detection's post-processing: see :func:`~benchmarks.common.trained_like`)."""
    directories = []
    for index, (task_name, options) in enumerate(TASK_OPTIONS.items()):
        torch.manual_seed(index)
        task = build_task(task_name, **options)
        directory = root / task_name
        directory.mkdir(parents=True, exist_ok=True)
        torch.save({"model": trained_like(build_model(model, {task_name: task})).state_dict()}, directory / CHECKPOINT_NAME)
        save_record(TeacherRecord(task=task_name, task_options=options, model=model,
                                  image_size=image_size), directory)
        directories.append(directory)
    return directories


def pool_and_teachers(count: int, size: int, model: ModelConfig) -> tuple[Path, list[Path]]:
    """The unlabeled ``pool`` images (a ``folder`` dataset) and four teacher directories."""
    world = generate("pool", CACHE / f"pool-{count}-{size}", count=count, size=size, seed=0,
                     progress=False, workers=2)
    name = f"teachers-v2-{model.backbone}-{model.width}-{model.fpn_channels}-{size}"
    return world / "images", make_teachers(CACHE / name, model, size)


def _preloaded(data: DatasetConfig, size: int, batch_size: int) -> list[torch.Tensor]:
    dataset = open_dataset(data)
    images = [load_image(dataset.path_of(i)) for i in range(len(dataset))]
    resized = [Geometry.resize_to(tuple(image.shape[-2:]), (size, size)).warp_image(image)
               for image in images]
    return [torch.stack(resized[i:i + batch_size]) for i in range(0, len(resized), batch_size)]


def bare_round(directories: list[Path], batches: list[torch.Tensor], opened: list[float]) -> float:
    """Seconds to open the teachers from ``directories`` as the labeler does, plus
    :func:`bare_forward` with them: the bare side of a round. Appends the opening's seconds to
    ``opened``."""
    start = time.perf_counter()
    teachers = [load_labeling_teacher(directory, torch.device("cpu")) for directory in directories]
    opened.append(time.perf_counter() - start)
    return opened[-1] + bare_forward(teachers, batches)


def bare_forward(teachers: list[LabelingTeacher], batches: list[torch.Tensor]) -> float:
    """Seconds for every teacher's ``predict`` on every preloaded batch (nothing else)."""
    start = time.perf_counter()
    with torch.inference_mode():
        for batch in batches:
            images = batch.float().div_(255.0)
            for teacher in teachers:
                teacher.predict(images)
    return time.perf_counter() - start


def _label_seconds(config: LabelConfig) -> float:
    out = Path(tempfile.mkdtemp(prefix="label-bench-"))
    try:
        start = time.perf_counter()
        label_dataset(config, out)
        return time.perf_counter() - start
    finally:
        shutil.rmtree(out, ignore_errors=True)


def measure_dirs(images: Path, teachers: list[Path], batch_size: int = 32, workers: int | None = None,
                 repeats: int = 7, shuffle_seed: int = 0) -> dict[str, Any]:
    """Per round, the ratio :func:`bare_round` seconds / ``label_dataset`` seconds on the same
    images, both in this process (see the module doc for what each side includes); rounds run in
    a shuffled order (which side goes first varies). ``value`` is the median ratio, with its
    quartiles and every round's ratio; ``teacher_open_seconds`` is the median time to open the
    teachers, which both sides include."""
    data = DatasetConfig("folder", str(images))
    loaded = [load_labeling_teacher(directory, torch.device("cpu")) for directory in teachers]
    size = loaded[0].input_size
    batches = _preloaded(data, size, batch_size)
    count = sum(len(batch) for batch in batches)
    config = LabelConfig(teachers=tuple(str(t) for t in teachers), data=data, batch_size=batch_size,
                         workers=workers, device="cpu")
    opened: list[float] = []
    times = interleave({"bare": lambda: bare_round(list(teachers), batches, opened),
                        "label": lambda: _label_seconds(config)}, repeats, warmup=WARMUP,
                       shuffle_seed=shuffle_seed)
    ratio = ratio_summary(times, "bare", "label")
    return {"value": ratio["median"], "target": f">= {TARGET} (lower quartile >= {LOWER_QUARTILE_TARGET})",
            "meets_target": ratio["median"] >= TARGET and ratio["q1"] >= LOWER_QUARTILE_TARGET,
            **{key: ratio[key] for key in ("q1", "q3", "rounds")},
            "images": count, "teachers": [t.task.name for t in loaded], "input_size": size,
            "batch_size": batch_size, "workers": default_workers() if workers is None else workers,
            "torch_threads": torch.get_num_threads(),
            "bare_forward_images_per_s": count / median(times["bare"]),
            "teacher_open_seconds": median(opened[WARMUP:]),
            "label_images_per_s": count / median(times["label"]),
            "seconds": times, "repeats": repeats}


def measure(count: int = 512, size: int = 64, model: ModelConfig | None = None,
            batch_size: int = 32, workers: int | None = None, repeats: int = 7) -> dict[str, Any]:
    """The figure on the world's pool with the demo's teacher architecture."""
    images, teachers = pool_and_teachers(count, size, model or model_config())
    return measure_dirs(images, teachers, batch_size, workers, repeats=repeats)


def main() -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=512)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--width", type=float, default=0.25)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=None, help="loader processes (default: the free cores)")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    model = model_config(width=args.width)
    result = measure(args.count, args.size, model, args.batch_size, args.workers, args.repeats)
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
