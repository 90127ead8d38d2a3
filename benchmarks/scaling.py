"""Scaling with data size: the labeler and the trainer stream, so memory does not grow with the
image count (MuST sec. 3.2 labels a pool of hundreds of millions of images; sec. 4 Table 4 trains on
more unlabeled images).

Labeling (four teachers, ``label_dataset``, one loader worker) and training (the demo student's
recipe: bf16, batch 32, one loader worker, one epoch over the pseudo labels it wrote, through
``make_loader`` and ``fit``) at each image count, each in a fresh subprocess. The parent samples
the memory of the child's whole process tree (the child and its loader workers) every
``SAMPLE_SECONDS`` and keeps the peak. The tree's memory is the sum of each process's PSS
(proportional set size, ``psutil``'s ``memory_full_info().pss`` from ``/proc/PID/smaps_rollup``):
a page shared by the child and a forked worker (torch's libraries, the parent's heap before the
fork) counts once, split between them, where a sum of RSS counted it in every process that maps
it. Where PSS cannot be read (not Linux) the sum of RSS is used instead; ``memory`` in the result
says which. Flat memory: the peak grows by less than ``TARGET_BYTES`` per added image
(least-squares slope over the counts).

    python -m benchmarks.scaling                              # 1,000 / 4,000 / 16,000 images
    python -m benchmarks.scaling --sizes 500 1000 2000        # smaller
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psutil

from benchmarks.common import model_config

ROOT = Path(__file__).resolve().parents[1]
SIZES = (1000, 4000, 16000)
TARGET_BYTES = 1024
SAMPLE_SECONDS = 0.05
TRAIN_BATCH = 32
"""The demo student's batch (``configs/demo.yaml``)."""


def memory_kind() -> str:
    """``"pss"`` where this system reports proportional set sizes (Linux), else ``"rss"``."""
    try:
        return "pss" if hasattr(psutil.Process().memory_full_info(), "pss") else "rss"
    except (psutil.AccessDenied, NotImplementedError):
        return "rss"


def process_bytes(process: psutil.Process, kind: str) -> int:
    """PSS (shared pages split between the processes mapping them) or RSS of one process."""
    if kind == "pss":
        return int(process.memory_full_info().pss)
    return int(process.memory_info().rss)


def tree_memory(process: psutil.Process, kind: str) -> int:
    """Bytes of ``process`` and all its descendants, summed (processes that end while being read
    count zero)."""
    total = 0
    for member in [process, *process.children(recursive=True)]:
        try:
            total += process_bytes(member, kind)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return total


def run_sampled(command: Sequence[str], env: dict[str, str], interval: float = SAMPLE_SECONDS,
                kind: str | None = None) -> tuple[str, int]:
    """Runs ``command``, sampling its process tree's memory (:func:`tree_memory`); returns its
    stdout and the peak bytes."""
    kind = kind or memory_kind()
    with tempfile.TemporaryFile(mode="w+") as stdout, tempfile.TemporaryFile(mode="w+") as stderr:
        child = subprocess.Popen(command, cwd=ROOT, env=env, stdout=stdout, stderr=stderr, text=True)
        process, peak = psutil.Process(child.pid), 0
        while child.poll() is None:
            try:
                peak = max(peak, tree_memory(process, kind))
            except psutil.NoSuchProcess:
                break
            time.sleep(interval)
        child.wait()
        stdout.seek(0), stderr.seek(0)
        if child.returncode:
            raise RuntimeError(f"scaling child failed: {stderr.read()[-2000:]}")
        return stdout.read(), peak


def _label(images: str, teachers: list[str], count: int, out: Path) -> float:
    from must.data.readers import DatasetConfig
    from must.label import LabelConfig, label_dataset

    config = LabelConfig(teachers=tuple(teachers), data=DatasetConfig("folder", images, limit=count),
                         batch_size=64, workers=1, device="cpu")
    start = time.perf_counter()
    label_dataset(config, out)
    return time.perf_counter() - start


def _train(images: str, count: int, labels: Path, batch_size: int) -> float:
    from benchmarks.common import stream, student
    from must.data.readers import DatasetConfig, open_dataset
    from must.label.dataset import PseudoLabels, WithPseudoLabels
    from must.train.config import TrainConfig
    from must.train.engine import fit

    model, tasks = student(model_config())
    data = WithPseudoLabels(open_dataset(DatasetConfig("folder", images, limit=count)), [PseudoLabels(labels)])
    steps = max(1, count // batch_size)  # one epoch
    config = TrainConfig(steps=steps, batch_size=batch_size, lr=0.05, precision="bf16", grad_clip=10.0,
                         checkpoint_every=0, progress=False, device="cpu")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        fit(model, tasks, lambda first: stream([data], tasks, batch_size, 64, workers=1, start_step=first),
            config, out)
    return time.perf_counter() - start


def child(args: argparse.Namespace) -> None:
    """One measurement in this fresh process; prints a JSON line."""
    if args.kind == "label":
        seconds = _label(args.images, args.teachers, args.count, Path(args.labels))
    else:
        seconds = _train(args.images, args.count, Path(args.labels), args.batch_size)
    print(json.dumps({"kind": args.kind, "count": args.count, "seconds": seconds}))


def _run_child(kind: str, images: Path, teachers: list[Path], count: int, labels: Path,
               batch_size: int) -> dict[str, Any]:
    command = [sys.executable, "-m", "benchmarks.scaling", "--child", kind, "--images", str(images),
               "--count", str(count), "--labels", str(labels), "--batch-size", str(batch_size),
               "--teachers", *map(str, teachers)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    stdout, peak = run_sampled(command, env)
    return {**json.loads(stdout.strip().splitlines()[-1]), "peak_tree_mb": peak / 2**20}


def bytes_per_added_image(images: Sequence[int], peaks_mb: Sequence[float]) -> float:
    """Least-squares slope of peak memory (MB) over image count, in bytes per image."""
    if len(images) < 2:
        raise ValueError("need at least two image counts for a slope")
    mean_x, mean_y = sum(images) / len(images), sum(peaks_mb) / len(peaks_mb)
    covariance = sum((x - mean_x) * (y - mean_y) for x, y in zip(images, peaks_mb))
    variance = sum((x - mean_x) ** 2 for x in images)
    return covariance / variance * 2**20


def measure(sizes: Sequence[int] = SIZES, batch_size: int = TRAIN_BATCH) -> dict[str, Any]:
    """Rows per image count (seconds, ms per image, peak tree memory) for labeling and training;
    the bytes per added image of each (``value``: the larger of the two)."""
    from benchmarks.label_efficiency import pool_and_teachers

    images, teachers = pool_and_teachers(max(sizes), 64, model_config())
    rows = []
    with tempfile.TemporaryDirectory(prefix="scaling-bench-") as scratch:
        for count in sizes:
            labels = Path(scratch) / f"labels-{count}"
            label = _run_child("label", images, teachers, count, labels, batch_size)
            train = _run_child("train", images, teachers, count, labels, batch_size)
            rows.append({"images": count,
                         "label_seconds": label["seconds"], "label_ms_per_image": 1000 * label["seconds"] / count,
                         "label_peak_tree_mb": label["peak_tree_mb"],
                         "train_seconds": train["seconds"], "train_ms_per_image": 1000 * train["seconds"] / count,
                         "train_peak_tree_mb": train["peak_tree_mb"]})
    counts = [row["images"] for row in rows]
    per_image = {kind: bytes_per_added_image(counts, [row[f"{kind}_peak_tree_mb"] for row in rows])
                 for kind in ("label", "train")}
    value = max(per_image.values())
    return {"value": value, "unit": "bytes per added image", "target": f"< {TARGET_BYTES}",
            "meets_target": value < TARGET_BYTES,
            "label_bytes_per_added_image": per_image["label"], "train_bytes_per_added_image": per_image["train"],
            "label_time_per_image_ratio": rows[-1]["label_ms_per_image"] / rows[0]["label_ms_per_image"],
            "train_time_per_image_ratio": rows[-1]["train_ms_per_image"] / rows[0]["train_ms_per_image"],
            "rows": rows, "memory": memory_kind(), "train_batch_size": batch_size,
            "sample_seconds": SAMPLE_SECONDS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--child", dest="kind", choices=("label", "train"))
    parser.add_argument("--images")
    parser.add_argument("--teachers", nargs="*", default=[])
    parser.add_argument("--count", type=int, default=64)
    parser.add_argument("--labels")
    parser.add_argument("--batch-size", type=int, default=TRAIN_BATCH)
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    args = parser.parse_args()
    if args.kind:
        child(args)
        return
    print(json.dumps(measure(args.sizes, args.batch_size), indent=1))


if __name__ == "__main__":
    main()
