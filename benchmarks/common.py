"""What every benchmark shares: side-by-side timing, the machine's description, cached world data,
the four MuST tasks (sec. 3.1) and the training steps being timed.

Timing rule: two (or more) candidates run interleaved, A, B, A, B, ... (or in a shuffled order per
round), and each figure is the median of the per-round ratios, reported with its quartiles and
every round's value. A neighbour that slows the machine for a while slows both members
of a pair, so the ratio holds even when the absolute numbers move.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import random
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from must.data.loader import make_eval_loader, make_loader
from must.data.readers import DatasetConfig, open_dataset
from must.data.sample import Batch
from must.models import ModelConfig, build_model
from must.tasks import build_task
from must.transfer.config import SMALL_IMAGE_OPTIONS
from must.tasks.base import Task
from must.world import CATEGORIES, SEGMENTATION_CLASSES, generate

TASK_OPTIONS: dict[str, dict[str, Any]] = {
    "classification": {"num_classes": len(CATEGORIES), "class_names": list(CATEGORIES)},
    "detection": {"num_classes": len(CATEGORIES), "class_names": list(CATEGORIES),
                  **SMALL_IMAGE_OPTIONS["detection"]},  # the demo's head (must.transfer.config)
    "segmentation": {"num_classes": len(SEGMENTATION_CLASSES), "class_names": list(SEGMENTATION_CLASSES)},
    "depth": {},
}
"""The four pseudo-label tasks of MuST (sec. 3.1), with the world's classes."""

CACHE = Path(os.environ.get("MUST_BENCH_CACHE", Path(tempfile.gettempdir()) / "must-bench"))
"""Generated world data is reused between runs (generation is deterministic)."""

WORLD_CAP: int | None = None
"""Quick runs cap every world set at this many images (``run.py --quick`` sets it)."""


def machine() -> dict[str, Any]:
    """CPU model, cores, torch version and threads, and the load when the run started."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": model, "cores": os.cpu_count(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}


def interleave(candidates: Mapping[str, Callable[[], float]], repeats: int, warmup: int = 1,
               shuffle_seed: int | None = None) -> dict[str, list[float]]:
    """Runs the candidates in turn ``warmup + repeats`` times; each returns the seconds it timed
    (so it may leave its own set-up out). Returns the timed rounds per candidate, in round order.

    With ``shuffle_seed`` every round runs the candidates in its own random order (seeded), so
    neither always goes first (after the other's caches, or at the start of a neighbour's burst)."""
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for round_index, order in enumerate(round_orders(list(candidates), warmup + repeats, shuffle_seed)):
        for name in order:
            seconds = candidates[name]()
            if round_index >= warmup:
                times[name].append(seconds)
    return times


def round_orders(names: Sequence[str], rounds: int, shuffle_seed: int | None = None) -> list[list[str]]:
    """The order of the candidates in each round: as given, or shuffled per round by a seeded
    generator (every round holds every name exactly once)."""
    generator = random.Random(shuffle_seed)
    orders = []
    for _ in range(rounds):
        order = list(names)
        if shuffle_seed is not None:
            generator.shuffle(order)
        orders.append(order)
    return orders


def pair_ratios(times: Mapping[str, Sequence[float]], numerator: str, denominator: str) -> list[float]:
    """Per round, ``times[numerator] / times[denominator]`` of that same round."""
    first, second = times[numerator], times[denominator]
    if len(first) != len(second) or not first:
        raise ValueError(f"'{numerator}' has {len(first)} rounds, '{denominator}' {len(second)}: "
                         "need the same positive number to pair them")
    return [a / b for a, b in zip(first, second)]


def pair_ratio(times: Mapping[str, Sequence[float]], numerator: str, denominator: str) -> float:
    """Median over rounds of ``times[numerator] / times[denominator]`` (paired, same round)."""
    return statistics.median(pair_ratios(times, numerator, denominator))


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def quartiles(values: Sequence[float]) -> dict[str, float]:
    """Lower quartile, median and upper quartile, linearly interpolated between order statistics
    (``numpy.percentile``'s default, Hyndman & Fan type 7); one value is all three."""
    if not values:
        raise ValueError("quartiles of no values")
    if len(values) == 1:
        return {"q1": float(values[0]), "median": float(values[0]), "q3": float(values[0])}
    q1, middle, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return {"q1": q1, "median": middle, "q3": q3}


def ratio_summary(times: Mapping[str, Sequence[float]], numerator: str, denominator: str) -> dict[str, Any]:
    """The paired ratios of every round and their quartiles: what a figure reports."""
    ratios = pair_ratios(times, numerator, denominator)
    return {**quartiles(ratios), "rounds": ratios}


def timed(fn: Callable[[], Any]) -> Callable[[], float]:
    """``fn`` as a candidate for :func:`interleave`: returns its wall time."""

    def run() -> float:
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start

    return run


def four_tasks(extra: Mapping[str, dict[str, Any]] | None = None) -> dict[str, Task]:
    """The four tasks of ``TASK_OPTIONS``, each with ``extra[name]`` options on top."""
    extra = extra or {}
    return {name: build_task(name, **options, **extra.get(name, {})) for name, options in TASK_OPTIONS.items()}


def model_config(backbone: str = "resnet18", width: float = 0.25, fpn_channels: int = 32) -> ModelConfig:
    """Default: ``must.stages.teach.demo_model()`` (a narrow ResNet-18 FPN)."""
    return ModelConfig(backbone=backbone, width=width, fpn_channels=fpn_channels)


def student(config: ModelConfig, seed: int = 0,
            task_options: Mapping[str, dict[str, Any]] | None = None) -> tuple[nn.Module, dict[str, Task]]:
    """A multi-task student with the four heads (MuST sec. 3.3), deterministic weights."""
    torch.manual_seed(seed)
    tasks = four_tasks(task_options)
    return trained_like(build_model(config, tasks)), tasks


def trained_like(model: nn.Module) -> nn.Module:
    """Makes a random detection head score like a trained one: background first.

    With random weights every one of the 100 RoIs per image scores ~1/(K+1) > 0.05 for every
    class, so K x 100 boxes per image reach NMS: a post-processing cost no trained detector pays
    (most of its RoIs are background). A +6 background logit leaves ~0-2 boxes per image, as a
    trained teacher does; all the convolutions and the RoI head still run in full."""
    heads = getattr(model, "heads", {})
    if "detection" in heads:
        with torch.no_grad():
            heads["detection"].roi_heads.box_predictor.cls_score.bias[0] = 6.0
    return model


def world(domain: str, count: int, size: int, seed: int = 0) -> Path:
    """A cached world dataset directory (every task's exact labels)."""
    count = min(count, WORLD_CAP) if WORLD_CAP else count
    return generate(domain, CACHE / f"{domain}-{count}-{size}-{seed}", count=count, size=size,
                    seed=seed, progress=False, workers=2)


def world_dataset(domain: str, count: int, size: int, seed: int = 0):
    return open_dataset(DatasetConfig("world", str(world(domain, count, size, seed))))


def held_out_batches(tasks: Mapping[str, Task], images: int, batch_size: int, size: int) -> list[Batch]:
    """Evaluation batches (plain resize) of ``scenes`` images no training batch holds (seed 1)."""
    dataset = world_dataset("scenes", images, size, seed=1)
    return list(make_eval_loader([dataset], dict(tasks), batch_size, size, rank=0, world_size=1))


def stream(datasets: Sequence, tasks: Mapping[str, Task], batch_size: int, size: int,
           workers: int = 0, rank: int = 0, world_size: int = 1, start_step: int = 0) -> Iterator[Batch]:
    """The student's training stream (random scale jitter, crop, flip) as ``must train`` builds it."""
    return make_loader(list(datasets), dict(tasks), batch_size, seed=0, output_size=size,
                       start_step=start_step, workers=workers, rank=rank, world_size=world_size)


def batches_in_memory(tasks: Mapping[str, Task], count: int, batch_size: int, size: int,
                      images: int = 256, rank: int = 0, world_size: int = 1) -> list[Batch]:
    """``count`` training batches of the world's ``scenes`` domain, loaded once (every task has
    exact labels there), so a timed step does no data work."""
    data = stream([world_dataset("scenes", images, size)], tasks, batch_size, size,
                  rank=rank, world_size=world_size)
    return [next(data) for _ in range(count)]


def cycle(batches: Sequence[Batch]) -> Iterator[Batch]:
    while True:
        yield from batches


def hand_step(model: nn.Module, tasks: Mapping[str, Task], optimizer: torch.optim.Optimizer,
              batch: Batch, precision: str = "fp32", weights: Mapping[str, float] | None = None,
              grad_clip: float | None = None) -> None:
    """A minimal training step: forward, weighted sum of task losses (1 where ``weights`` gives
    none), backward, optional gradient-norm clipping, SGD step."""
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
        outputs = model(batch.images, batch.targets)
        losses = [tasks[name].loss(outputs[name], target)["loss"].float() * (weights or {}).get(name, 1.0)
                  for name, target in batch.targets.items()]
    torch.stack(losses).sum().backward()
    if grad_clip is not None:
        nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()


def sgd(model: nn.Module, lr: float = 0.01) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=1e-4)


def hand_loop_seconds(model: nn.Module, tasks: Mapping[str, Task], optimizer: torch.optim.Optimizer,
                      batches: Sequence[Batch], steps: int, precision: str = "fp32",
                      weights: Mapping[str, float] | None = None, grad_clip: float | None = None) -> float:
    """Seconds per step of :func:`hand_step` over ``steps`` steps (after one untimed step)."""
    model.train()
    data = cycle(batches)
    hand_step(model, tasks, optimizer, next(data), precision, weights, grad_clip)
    start = time.perf_counter()
    for _ in range(steps):
        hand_step(model, tasks, optimizer, next(data), precision, weights, grad_clip)
    return (time.perf_counter() - start) / steps


class StampedStream:
    """Batches from memory, recording when each is asked for: inside ``fit`` the interval between
    two requests is exactly one whole engine step (set-up and the final save fall outside)."""

    def __init__(self, batches: Sequence[Batch]) -> None:
        self.batches, self.stamps = list(batches), []

    def __call__(self, first: int) -> Iterator[Batch]:
        return self._generate()

    def _generate(self) -> Iterator[Batch]:
        for batch in cycle(self.batches):
            self.stamps.append(time.perf_counter())
            yield batch

    def seconds_per_step(self, skip: int = 1) -> float:
        """Mean step time, the first ``skip`` steps left out (warm-up)."""
        stamps = self.stamps[skip:]
        if len(stamps) < 2:
            raise ValueError("need at least skip + 2 steps to time one")
        return (stamps[-1] - stamps[0]) / (len(stamps) - 1)


def run_stamp(root: Path = Path(__file__).resolve().parents[1], commit: str | None = None) -> dict[str, Any]:
    """What a result was measured on: the commit (and whether the tree had uncommitted changes),
    the UTC time, the machine. ``commit`` names the measured commit where ``root`` has no ``.git``
    (an exported copy, ``git archive``)."""
    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True)
        except (OSError, subprocess.CalledProcessError):
            return None
        return done.stdout.strip()

    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit or git("rev-parse", "HEAD"), "uncommitted_changes": bool(status) if status is not None else None,
            "utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "machine": machine()}


def command_line(module: str, argv: Sequence[str] | None = None) -> str:
    """The shell command that reruns this measurement: ``python -m MODULE ARGV`` (default: this
    process's arguments), each argument quoted as the shell needs."""
    return shlex.join(["python", "-m", module, *(sys.argv[1:] if argv is None else argv)])


def run_must(argv: Sequence[str]) -> float:
    """Runs ``must ARGV`` in this process; its wall-clock seconds (one decimal). A failure stops
    the measurement, naming the command."""
    from must.cli import main  # only the scripts that drive ``must`` pay for importing the CLI

    start = time.perf_counter()
    if main(list(argv)) != 0:
        raise SystemExit(f"must {shlex.join(argv)} failed")
    return round(time.perf_counter() - start, 1)


def transfer_best(out: Path, init: str, task: str) -> dict[str, Any]:
    """The selected cell of one ``must transfer`` run (``OUT/transfer/INIT/TASK/best.json``): its
    metric, test and validation values, learning rate and steps."""
    record = json.loads((out / "transfer" / init / task / "best.json").read_text())
    return {"metric": record["metric"], "test": record["value"], "val": record["val_value"],
            "lr": record["lr"], "steps": record["steps"]}
