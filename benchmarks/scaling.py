"""Scaling with data size (SPEC M8: the labeler and the trainer stream; memory does not grow with
the image count).

Labeling (four teachers, ``label_dataset``) and training (the student, one epoch over the pseudo
labels it wrote, through ``make_loader`` and ``fit``) at 1x, 2x, 4x images, each in a fresh
subprocess that reports its seconds and peak RSS (``VmHWM``; the labeler's one DataLoader
worker is not included). Linear time means seconds per image stay flat; flat memory means the peak
RSS does not grow with the count.

    python -m benchmarks.scaling
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import model_config

ROOT = Path(__file__).resolve().parents[1]


def _peak_rss_mb() -> dict[str, float]:
    """This process's peak RSS. Linux's ``ru_maxrss`` survives fork and exec (a child started by
    a 1.5 GB parent reports >= 1.5 GB), so ``VmHWM`` of the fresh address space is read instead;
    ``ru_maxrss`` (KiB on Linux) only where /proc is missing."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return {"peak_rss_mb": int(line.split()[1]) / 1024}
    except OSError:
        pass
    return {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def _label(images: str, teachers: list[str], count: int, out: Path) -> float:
    from must.data.readers import DatasetConfig
    from must.label import LabelConfig, label_dataset

    config = LabelConfig(teachers=tuple(teachers), data=DatasetConfig("folder", images, limit=count),
                         batch_size=16, workers=1, images_per_shard=32, device="cpu")
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
    config = TrainConfig(steps=steps, batch_size=batch_size, lr=0.01, precision="fp32",
                         checkpoint_every=0, progress=False, device="cpu")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        fit(model, tasks, lambda first: stream([data], tasks, batch_size, 64, start_step=first),
            config, out)
    return time.perf_counter() - start


def child(args: argparse.Namespace) -> None:
    """One measurement in this fresh process; prints a JSON line."""
    if args.kind == "label":
        seconds = _label(args.images, args.teachers, args.count, Path(args.labels))
    else:
        seconds = _train(args.images, args.count, Path(args.labels), args.batch_size)
    print(json.dumps({"kind": args.kind, "count": args.count, "seconds": seconds, **_peak_rss_mb()}))


def _run_child(kind: str, images: Path, teachers: list[Path], count: int, labels: Path,
               batch_size: int) -> dict[str, Any]:
    command = [sys.executable, "-m", "benchmarks.scaling", "--child", kind, "--images", str(images),
               "--count", str(count), "--labels", str(labels), "--batch-size", str(batch_size),
               "--teachers", *map(str, teachers)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"scaling child failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(base: int = 64, scales: tuple[int, ...] = (1, 2, 4), batch_size: int = 16) -> list[dict[str, Any]]:
    from benchmarks.label_efficiency import pool_and_teachers

    images, teachers = pool_and_teachers(base * max(scales), 64, model_config())
    rows = []
    with tempfile.TemporaryDirectory(prefix="scaling-bench-") as scratch:
        for scale in scales:
            count, labels = base * scale, Path(scratch) / f"labels-{scale}"
            label = _run_child("label", images, teachers, count, labels, batch_size)
            train = _run_child("train", images, teachers, count, labels, batch_size)
            rows.append({"scale": scale, "images": count,
                         "label_seconds": label["seconds"], "label_ms_per_image": 1000 * label["seconds"] / count,
                         "label_peak_rss_mb": label["peak_rss_mb"],
                         "train_seconds": train["seconds"], "train_ms_per_image": 1000 * train["seconds"] / count,
                         "train_peak_rss_mb": train["peak_rss_mb"]})
    return rows


def summary(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Largest / smallest scale: time per image (1 = linear) and peak RSS (1 = flat)."""
    first, last = rows[0], rows[-1]
    return {"label_time_per_image_ratio": last["label_ms_per_image"] / first["label_ms_per_image"],
            "train_time_per_image_ratio": last["train_ms_per_image"] / first["train_ms_per_image"],
            "label_peak_rss_ratio": last["label_peak_rss_mb"] / first["label_peak_rss_mb"],
            "train_peak_rss_ratio": last["train_peak_rss_mb"] / first["train_peak_rss_mb"],
            "images_ratio": last["images"] / first["images"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--child", dest="kind", choices=("label", "train"))
    parser.add_argument("--images")
    parser.add_argument("--teachers", nargs="*", default=[])
    parser.add_argument("--count", type=int, default=64)
    parser.add_argument("--labels")
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    if args.kind:
        child(args)
        return
    rows = measure(args.count)
    print(json.dumps({"rows": rows, "summary": summary(rows)}, indent=1))


if __name__ == "__main__":
    main()
