"""Labeling efficiency: end-to-end throughput of ``label_dataset`` against the bare forward pass
of the same teachers on preloaded tensors (SPEC M2 / M8: the model should never wait on data).

Both sides run the same teachers on the same images with the same batch size and threads; the
end-to-end side also decodes PNGs and resizes in DataLoader workers, maps predictions to the
source size, applies the pseudo-label rules, encodes and writes tar shards. The target is a
ratio >= 0.9. Wall time on a shared machine measures the neighbours too: each side runs
``repeats`` times and the best is kept.

    python benchmarks/label_efficiency.py                      # 4 tiny teachers, 1000 images
    python benchmarks/label_efficiency.py --count 200 --width 0.25
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

from must.data.geometry import Geometry
from must.data.readers import DatasetConfig, open_dataset
from must.data.readers.files import load_image
from must.label import LabelConfig, label_dataset
from must.label.teachers import LabelingTeacher, load_labeling_teacher
from must.models import ModelConfig, build_model
from must.tasks import build_task
from must.teacher import CHECKPOINT_NAME, TeacherRecord, save_record
from must.world import CATEGORIES, SEGMENTATION_CLASSES, generate

TASK_OPTIONS: dict[str, dict[str, Any]] = {
    "classification": {"num_classes": len(CATEGORIES), "class_names": list(CATEGORIES)},
    "detection": {"num_classes": len(CATEGORIES), "class_names": list(CATEGORIES)},
    "segmentation": {"num_classes": len(SEGMENTATION_CLASSES), "class_names": list(SEGMENTATION_CLASSES)},
    "depth": {},
}


def make_teachers(root: Path, model: ModelConfig, image_size: int) -> list[Path]:
    """One random-weight teacher per MuST task (speed does not depend on the weights' values)."""
    directories = []
    for task_name, options in TASK_OPTIONS.items():
        task = build_task(task_name, **options)
        directory = root / task_name
        directory.mkdir(parents=True, exist_ok=True)
        torch.save({"model": build_model(model, {task_name: task}).state_dict()}, directory / CHECKPOINT_NAME)
        save_record(TeacherRecord(task=task_name, task_options=options, model=model,
                                  image_size=image_size), directory)
        directories.append(directory)
    return directories


def _preloaded(data: DatasetConfig, size: int, batch_size: int) -> list[torch.Tensor]:
    dataset = open_dataset(data)
    images = [load_image(dataset.path_of(i)) for i in range(len(dataset))]
    resized = [Geometry.resize_to(tuple(image.shape[-2:]), (size, size)).warp_image(image)
               for image in images]
    return [torch.stack(resized[i:i + batch_size]) for i in range(0, len(resized), batch_size)]


def bare_forward(teachers: list[LabelingTeacher], batches: list[torch.Tensor]) -> float:
    """Seconds for every teacher's ``predict`` on every preloaded batch (nothing else)."""
    start = time.perf_counter()
    with torch.inference_mode():
        for batch in batches:
            images = batch.float().div_(255.0)
            for teacher in teachers:
                teacher.predict(images)
    return time.perf_counter() - start


def measure(images: Path, teachers: list[Path], batch_size: int = 32, workers: int = 2,
            images_per_shard: int = 250, repeats: int = 2) -> dict[str, Any]:
    """Images/s of ``label_dataset`` end to end and of the bare forward pass; their ratio."""
    data = DatasetConfig("folder", str(images))
    loaded = [load_labeling_teacher(directory, torch.device("cpu")) for directory in teachers]
    size = loaded[0].input_size
    batches = _preloaded(data, size, batch_size)
    count = sum(len(batch) for batch in batches)
    bare_forward(loaded, batches[:2])  # warm-up (allocator, oneDNN kernels)
    bare = min(bare_forward(loaded, batches) for _ in range(repeats))
    config = LabelConfig(teachers=tuple(str(t) for t in teachers), data=data, batch_size=batch_size,
                         workers=workers, images_per_shard=images_per_shard, device="cpu")
    end_to_end = []
    for _ in range(repeats):
        out = Path(tempfile.mkdtemp(prefix="label-bench-"))
        try:
            start = time.perf_counter()
            label_dataset(config, out)
            end_to_end.append(time.perf_counter() - start)
        finally:
            shutil.rmtree(out, ignore_errors=True)
    best = min(end_to_end)
    return {"images": count, "teachers": [t.task.name for t in loaded], "input_size": size,
            "batch_size": batch_size, "workers": workers, "torch_threads": torch.get_num_threads(),
            "bare_forward_images_per_s": count / bare, "label_images_per_s": count / best,
            "ratio": bare / best, "label_seconds": end_to_end}


def main() -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--width", type=float, default=0.125)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "must-label-bench")
    args = parser.parse_args()
    world = generate("pool", args.cache / f"pool-{args.count}-{args.size}", count=args.count,
                     size=args.size, seed=0, progress=False)
    model = ModelConfig(backbone="resnet18", width=args.width, fpn_channels=16)
    teachers = make_teachers(args.cache / f"teachers-{args.width}", model, args.size)
    result = measure(world / "images", teachers, args.batch_size, args.workers, repeats=args.repeats)
    print(json.dumps(result, indent=1))
    print(f"labeling {result['label_images_per_s']:.0f} images/s vs bare forward "
          f"{result['bare_forward_images_per_s']:.0f} images/s: ratio {result['ratio']:.2f} (target >= 0.9)")
    return result


if __name__ == "__main__":
    main()
