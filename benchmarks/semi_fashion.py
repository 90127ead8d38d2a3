"""FlexMatch and FreeMatch beside FixMatch and a labels-only row on Fashion-MNIST with 40 labels per
class, through ``must train`` (``run_student``: real labels + a semi-supervised task, ``mu``
unlabeled images per labeled one), written to ``docs/measurements/semi.json``.

    python -m benchmarks.semi_fashion --steps 400 --labeled-batch 4 --mu 3 --unlabeled 5000 --test 1000

The labeled set is the first 40 training images of each class (an ImageFolder written to
``--data``), the unlabeled pool the next ``--unlabeled`` training images (a plain image folder:
no labels); validation is the first ``--test`` test images. The schedule is whatever the caller
gives: the papers train 2^20 steps of 64 labeled + 448 unlabeled images.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from PIL import Image

from benchmarks.common import command_line, model_config, run_stamp
from must.data.readers import DatasetConfig, open_for_task
from must.data.readers.fashion_mnist import DEFAULT_ROOT
from must.stages.student import SourceConfig, StudentConfig, run_student
from must.train.config import TrainConfig, WeightingConfig

METHODS = ("labels_only", "fixmatch", "flexmatch", "freematch", "softmatch", "uda", "mean_teacher")


def write_data(root: Path, per_class: int, unlabeled: int) -> tuple[Path, Path]:
    """``root/labeled/<class>/*.png`` (``per_class`` per class) and ``root/unlabeled/*.png``."""
    labeled, pool = root / "labeled", root / "unlabeled"
    if (root / "done").exists():
        return labeled, pool
    train = open_for_task(DatasetConfig(format="fashion_mnist", root=DEFAULT_ROOT, split="train"), "classification")
    counts = [0] * 10
    written = 0
    for index in range(len(train)):
        sample = train[index]
        label = int(sample.targets["classification"])
        image = Image.fromarray(sample.image.permute(1, 2, 0).numpy())
        if counts[label] < per_class:
            (labeled / str(label)).mkdir(parents=True, exist_ok=True)
            image.save(labeled / str(label) / f"{index:05d}.png")
            counts[label] += 1
        elif written < unlabeled:
            pool.mkdir(parents=True, exist_ok=True)
            image.save(pool / f"{index:05d}.png")
            written += 1
        if min(counts) == per_class and written == unlabeled:
            break
    (root / "done").touch()
    return labeled, pool


def student_config(method: str, labeled: Path, pool: Path, args: argparse.Namespace) -> StudentConfig:
    sources = [SourceConfig(DatasetConfig(format="imagefolder", root=str(labeled)))]
    tasks = {"classification": {"num_classes": 10}}
    batch = args.labeled_batch
    mu = None
    if method != "labels_only":
        sources.append(SourceConfig(DatasetConfig(format="folder", root=str(pool)), labeled=False))
        tasks[f"{method}_classification"] = {"view_size": 32}
        batch, mu = args.labeled_batch * (1 + args.mu), args.mu
    test = DatasetConfig(format="fashion_mnist", root=DEFAULT_ROOT, split="test", limit=args.test)
    # Mean Teacher's teacher is the weight average (Tarvainen & Valpola 2017 sec. 3.2: 0.99 while
    # ramping up, 0.999 after; a run this short stays at 0.99)
    train = TrainConfig(steps=args.steps, batch_size=batch, lr=0.03, weight_decay=5e-4, checkpoint_every=0,
                        log_every=max(1, args.steps // 4), device="cpu", precision="fp32", progress=False,
                        seed=0, weighting=WeightingConfig(method="equal"),
                        ema_decay=0.99 if method == "mean_teacher" else None)
    return StudentConfig(sources=tuple(sources), tasks=tasks, val={"classification": test}, model=model_config(),
                         train=train, image_size=32, scale_range=(1.0, 1.0), mu=mu, eval_batch_size=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--labeled-batch", type=int, default=4, help="labeled images per step (B)")
    parser.add_argument("--mu", type=int, default=2, help="unlabeled images per labeled one")
    parser.add_argument("--unlabeled", type=int, default=2000, help="training images in the unlabeled pool")
    parser.add_argument("--test", type=int, default=500, help="test images scored")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (on a shared, oversubscribed CPU two threads ran 300x slower)")
    parser.add_argument("--data", type=Path, default=Path("/tmp/must-semi/data"))
    parser.add_argument("--out", type=Path, default=Path("/tmp/must-semi/runs"))
    parser.add_argument("--result", type=Path,
                        default=Path(__file__).resolve().parents[1] / "docs/measurements/semi.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    labeled, pool = write_data(args.data, 40, args.unlabeled)
    result = {**run_stamp(), "command": command_line("benchmarks.semi_fashion"),
              "schedule": {"steps": args.steps, "labeled_batch": args.labeled_batch, "mu": args.mu,
                           "note": "reduced to fit a shared 2-core CPU; the papers train 2^20 steps of B=64, mu=7"},
              "threads": args.threads, "labels_per_class": 40, "unlabeled": args.unlabeled, "test_images": args.test,
              "rows": {}}
    args.result.parent.mkdir(parents=True, exist_ok=True)
    for method in args.methods.split(","):
        start = time.perf_counter()
        metrics = run_student(student_config(method, labeled, pool, args), args.out / method)
        result["rows"][method] = {"top1": metrics["classification"]["top1"],
                                  "seconds": round(time.perf_counter() - start, 1)}
        print(method, result["rows"][method], flush=True)
        args.result.write_text(json.dumps(result, indent=2) + "\n")  # each row as it finishes


if __name__ == "__main__":
    main()
