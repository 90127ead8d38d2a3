"""``must demo``: the whole MuST pipeline on the embedded procedural world (SPEC B3).

generate data -> train the four teachers (sec. 3.1) -> pseudo-label the shared ``pool`` (sec. 3.2)
-> train the multi-task student (sec. 3.3-3.4) -> transfer every pre-training under comparison to
every downstream task (sec. 3.5) -> write the report. Everything lands in one run directory in
DESIGN.md's layout; a stage whose outputs exist for the same config is skipped, so an interrupted
demo resumes where it stopped.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from must import config as config_lib
from must.data.readers import DatasetConfig
from must.data.readers.fashion_mnist import DEFAULT_ROOT as FASHION_MNIST_ROOT
from must.models import ModelConfig
from must.stages.data import WorldDataConfig, generate_world
from must.stages.student import RandAugmentConfig, SourceConfig, StudentConfig
from must.stages.teach import TeachConfig, demo_model
from must.train.config import TrainConfig, WeightingConfig
from must.transfer.config import DownstreamTask, default_suite

TEACHER_DOMAINS = {"classification": "objects", "detection": "clutter", "segmentation": "scenes",
                   "depth": "depth"}
"""Which world domain trains which teacher (the paper: ImageNet, Objects365, COCO, MiDaS data)."""


@dataclass(frozen=True)
class TeacherPlan:
    train: TrainConfig = field(default_factory=lambda: TrainConfig(steps=400, batch_size=32, lr=0.05))
    task_options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class LabelPlan:
    batch_size: int = 64
    workers: int = 1
    thresholds: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class StudentPlan:
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        steps=800, batch_size=32, lr=0.05, weighting=WeightingConfig(method="must")))
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)
    randaugment: RandAugmentConfig | None = None


@dataclass(frozen=True)
class TransferPlan:
    inits: tuple[str, ...] = ("scratch", "supervised", "must")
    """Rows of the comparison: scratch, supervised (the classification teacher), must (student)."""
    tasks: dict[str, DownstreamTask] = field(default_factory=dict)
    """Downstream tasks; empty = the default suite (Fashion-MNIST + the world's transfer domain)."""
    workers: int = 1


@dataclass(frozen=True)
class DemoConfig:
    world: WorldDataConfig = field(default_factory=WorldDataConfig)
    model: ModelConfig = field(default_factory=demo_model)
    image_size: int = 64
    teachers: dict[str, TeacherPlan] = field(default_factory=lambda: {t: TeacherPlan() for t in TEACHER_DOMAINS})
    label: LabelPlan = field(default_factory=LabelPlan)
    student: StudentPlan = field(default_factory=StudentPlan)
    transfer: TransferPlan = field(default_factory=TransferPlan)
    fashion_mnist: str = FASHION_MNIST_ROOT
    report: bool = True


class StageClock:
    """Times each stage into ``timings.json`` (report: seconds per stage)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.timings: dict[str, float] = json.loads(path.read_text()) if path.exists() else {}

    def run(self, name: str, action: Callable[[], Any]) -> Any:
        start = time.perf_counter()
        print(f"\n== {name}", flush=True)
        result = action()
        elapsed = time.perf_counter() - start
        if elapsed > 1.0 or name not in self.timings:  # keep the real time of a stage that was skipped
            self.timings[name] = round(elapsed, 2)
        self.path.write_text(json.dumps(self.timings, indent=2))
        return result


def already_done(out: Path, marker: str, config: Any) -> bool:
    """True when ``out`` holds ``marker`` and a ``config.yaml`` equal to ``config``."""
    saved = out / "config.yaml"
    if not (out / marker).exists() or not saved.exists():
        return False
    return yaml.safe_load(saved.read_text()) == yaml.safe_load(yaml.safe_dump(config_lib.to_dict(config)))


def world_set(root: Path, domain: str, split: str, tasks: tuple[str, ...] = ()) -> DatasetConfig:
    return DatasetConfig(format="world", root=str(root / domain / split), tasks=tasks)


def teach_configs(config: DemoConfig, data: Path) -> dict[str, TeachConfig]:
    return {task: TeachConfig(task=task, task_options=plan.task_options,
                              data=world_set(data, TEACHER_DOMAINS[task], "train"),
                              val=world_set(data, TEACHER_DOMAINS[task], "val"),
                              model=config.model, train=plan.train, image_size=config.image_size)
            for task, plan in config.teachers.items()}


def student_config(config: DemoConfig, run: Path) -> StudentConfig:
    data = run / "data"
    pool = DatasetConfig(format="folder", root=str(data / "pool" / "train" / "images"))
    return StudentConfig(
        sources=(SourceConfig(data=pool, pseudo=(str(run / "pseudo" / "pool"),)),),
        teachers=tuple(str(run / "teachers" / task) for task in config.teachers),
        tasks=config.student.tasks,
        val={task: world_set(data, TEACHER_DOMAINS[task], "val") for task in config.teachers},
        model=config.model, train=config.student.train, image_size=config.image_size,
        randaugment=config.student.randaugment)


def transfer_inits(config: DemoConfig, run: Path) -> dict[str, str | None]:
    known = {"scratch": None, "supervised": str(run / "teachers" / "classification" / "checkpoint.pt"),
             "must": str(run / "student" / "checkpoint.pt")}
    unknown = [name for name in config.transfer.inits if name not in known]
    if unknown:
        raise config_lib.ConfigError(f"transfer.inits: unknown {unknown}; choose from {', '.join(known)}")
    return {name: known[name] for name in config.transfer.inits}


def run_demo(preset: str, out: Path, overrides: Sequence[str] = ()) -> int:
    from must.label.labeler import LabelConfig, label_dataset
    from must.stages.student import run_student
    from must.stages.teach import run_teach
    from must.transfer.config import TransferConfig
    from must.transfer.run import run_transfer

    config = config_lib.load(DemoConfig, preset, overrides)
    out.mkdir(parents=True, exist_ok=True)
    config_lib.save(config, out / "config.yaml")
    clock = StageClock(out / "timings.json")
    total = time.perf_counter()
    data = out / "data"
    clock.run("world", lambda: generate_world(config.world, data))

    for task, teach in teach_configs(config, data).items():
        target = out / "teachers" / task
        if not already_done(target, "teacher.json", teach):
            clock.run(f"teacher/{task}", lambda: run_teach(teach, target))

    label = LabelConfig(teachers=tuple(str(out / "teachers" / t) for t in config.teachers),
                        data=DatasetConfig(format="folder", root=str(data / "pool" / "train" / "images")),
                        batch_size=config.label.batch_size, workers=config.label.workers,
                        thresholds=config.label.thresholds)
    pseudo = out / "pseudo" / "pool"
    clock.run("label", lambda: label_dataset(label, pseudo))

    student = student_config(config, out)
    if not already_done(out / "student", "student.json", student):
        clock.run("student", lambda: run_student(student, out / "student"))

    suite = config.transfer.tasks or default_suite(data / "transfer", config.fashion_mnist)
    for name, init in transfer_inits(config, out).items():
        transfer = TransferConfig(init=init, init_name=name, tasks=suite, model=config.model,
                                  workers=config.transfer.workers)
        clock.run(f"transfer/{name}", lambda: run_transfer(transfer, out))

    if config.report:
        from must.report.build import write_report

        clock.run("report", lambda: write_report(out))
    clock.timings["total"] = round(time.perf_counter() - total, 2)
    clock.path.write_text(json.dumps(clock.timings, indent=2))
    print_summary(out)
    return 0


def print_summary(run: Path) -> None:
    """The demo's table: transfer score per pre-training and downstream task (paper Table 2)."""
    results_path = run / "report" / "results.json"
    if not results_path.exists():
        print(f"\nrun directory: {run}")
        return
    results = json.loads(results_path.read_text())
    transfer = results.get("transfer", {})
    tasks = sorted({task for row in transfer.values() for task in row})
    header = f"{'pre-training':<14}" + "".join(f"{task:>16}" for task in tasks)
    print("\n" + header + "\n" + "-" * len(header))
    for init, row in transfer.items():
        cells = "".join(f"{100 * row[t]['value']:>16.1f}" if t in row else f"{'-':>16}" for t in tasks)
        print(f"{init:<14}{cells}")
    metric_names = {t: next(iter(r[t]["metric"] for r in transfer.values() if t in r)) for t in tasks}
    print("metrics: " + ", ".join(f"{t}={m}" for t, m in metric_names.items()))
    timings = results.get("timings", {})
    if "total" in timings:
        print(f"total time: {timings['total'] / 60:.1f} min")
    print(f"report: {run / 'report' / 'index.html'}")
