"""``must predict`` with one student vs. the four teachers' ``must predict`` one after another, end
to end (decode, fit, forward, map back to the source size, write every file), same images (MuST
sec. 1: one model replaces the specialized ones at inference). Beside the forward-only
``student_vs_teachers`` figure: this one includes everything a user waits for.

The teachers hold the student's trunk and their own head's weights (as in
``student_vs_teachers``), written as ``must teach`` directories; the student as a ``must train``
directory. Each round predicts into fresh output directories, so nothing is skipped as done.

    python -m benchmarks.predict_vs_teachers
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import TASK_OPTIONS, interleave, median, model_config, pair_ratio, student, timed, world
from must import config as config_lib
from must.data.readers import DatasetConfig
from must.models import ModelConfig
from must.predict.run import PredictConfig, predict_dataset

os.environ.setdefault("TQDM_DISABLE", "1")  # progress bars are not part of the figure


def write_models(root: Path, config: ModelConfig, size: int) -> tuple[Path, list[Path]]:
    """A student directory and one teacher directory per task, sharing the student's weights."""
    model, tasks = student(config)
    options = {name: json.loads(json.dumps(TASK_OPTIONS[name])) for name in tasks}  # tuples -> lists
    model_record = config_lib.to_dict(config)
    directory = root / "student"
    directory.mkdir(parents=True)
    torch.save({"model": model.state_dict()}, directory / "checkpoint.pt")
    (directory / "student.json").write_text(json.dumps({"tasks": options, "model": model_record,
                                                       "image_size": size}))
    teachers = []
    for name in tasks:
        teacher = root / "teachers" / name
        teacher.mkdir(parents=True)
        (teacher / "teacher.json").write_text(json.dumps({
            "task": name, "task_options": options[name], "model": model_record, "image_size": size,
            "checkpoint": str(directory / "checkpoint.pt")}))  # the loader loads only its head
        teachers.append(teacher)
    return directory, teachers


def measure(config: ModelConfig | None = None, count: int = 64, size: int = 64, batch_size: int = 16,
            repeats: int = 3) -> dict[str, Any]:
    """Seconds of one student ``must predict`` and of four teachers' runs, same images; their
    ratio and both images/s."""
    config = config or model_config()
    images = world("pool", count, size) / "images"
    root = Path(tempfile.mkdtemp(prefix="predict-vs-teachers-"))
    try:
        student_dir, teacher_dirs = write_models(root, config, size)
        settings = PredictConfig(data=DatasetConfig("folder", str(images)), batch_size=batch_size,
                                 device="cpu")
        rounds = iter(range(10**6))

        def predict_with(models: list[Path]) -> None:
            out = root / f"out-{next(rounds)}"
            for model in models:
                predict_dataset(model, settings, out / model.name)
            shutil.rmtree(out)

        times = interleave({"student": timed(lambda: predict_with([student_dir])),
                            "teachers": timed(lambda: predict_with(teacher_dirs))}, repeats)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    images_count = len(list(images.iterdir()))
    ratio = pair_ratio(times, "student", "teachers")
    return {"value": ratio, "student_images_per_s": images_count / median(times["student"]),
            "teachers_images_per_s": images_count / median(times["teachers"]),
            "student_s": median(times["student"]), "teachers_s": median(times["teachers"]),
            "images": images_count, "image_size": size, "batch_size": batch_size, "repeats": repeats,
            "model": {"backbone": config.backbone, "width": config.width,
                      "fpn_channels": config.fpn_channels}}


def main() -> dict[str, Any]:
    result = measure()
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
