"""``must demo``: the whole MuST pipeline on the embedded procedural world.

generate data -> train the four teachers (sec. 3.1) -> pseudo-label the shared ``pool`` (sec. 3.2)
-> train the multi-task student (sec. 3.3-3.4) -> transfer every pre-training under comparison to
every downstream task (sec. 3.5) -> write the report. Everything lands in one run directory (the
README's layout); a stage whose outputs exist for the same config is skipped, so an interrupted
demo resumes where it stopped.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import yaml

from must import config as config_lib
from must import distributed
from must.data.readers import DatasetConfig
from must.data.readers.fashion_mnist import DEFAULT_ROOT as FASHION_MNIST_ROOT
from must.label.labeler import LabelConfig
from must.label.manifest import MANIFEST_NAME
from must.files import CHECKPOINT_NAME
from must.models import ModelConfig, demo_model
from must.world.splits import WorldDataConfig, generate_world
from must.stages.pretrain import PretrainConfig
from must.stages.student import RandAugmentConfig, SourceConfig, StudentConfig
from must.stages.teach import TeachConfig, run_teach
from must.train.config import TrainConfig, WeightingConfig
from must.train.engine import resolve_precision
from must.transfer.config import DownstreamTask, default_suite, with_settings

TEACHER_DOMAINS = {"classification": "objects", "detection": "clutter", "segmentation": "scenes",
                   "depth": "depth"}
"""Which world domain trains which teacher (the paper: ImageNet, Objects365, COCO, MiDaS data)."""


@dataclass(frozen=True)
class TeacherPlan:
    train: TrainConfig = field(default_factory=lambda: TrainConfig(steps=400, batch_size=32, lr=0.05))
    task_options: dict[str, Any] = field(default_factory=dict)
    data: DatasetConfig | None = None
    """The teacher's labeled training set; None = its world domain (``TEACHER_DOMAINS``)."""
    val: DatasetConfig | None = None
    """Its validation set; None = the world domain's ``val`` split."""
    image_size: int | None = None
    """Its input size; None = the demo's ``image_size`` (MuST supp. sec. 2.1 trains each teacher
    at its own: 224 classification, 640 detection, 896 segmentation)."""


@dataclass(frozen=True)
class LabelPlan:
    batch_size: int = 64
    workers: int | None = None
    """Loader processes; None = the free cores (``must.label.labeler.default_workers``)."""
    thresholds: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class StudentPlan:
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        steps=800, batch_size=32, lr=0.05, weighting=WeightingConfig(method="must")))
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)
    randaugment: RandAugmentConfig | None = None
    processes: int = 1
    """DDP processes training the student and every ``students`` variant (``torchrun``, the cores
    split among them); 1 = in the demo's own process."""


@dataclass(frozen=True)
class StudentVariant:
    """Another student of the comparison, trained like the main one (``student``) but on other
    labels: the Table 3 ladder (a subset of the pseudo-label tasks) or Table 5 (the teachers'
    own labeled sets, each image with its one real label, with or without pseudo labels for the
    other tasks)."""

    tasks: tuple[str, ...] = ()
    """Teacher tasks it learns; empty = every teacher's."""
    pool: bool = True
    """Learn from the ``pool``'s pseudo labels."""
    labeled: bool = False
    """Learn from the teachers' labeled training sets (their real labels)."""
    pseudo_on_labeled: bool = False
    """Those labeled sets also carry every teacher's pseudo labels for the tasks they lack
    (labels them first: ``pseudo/<domain>``)."""
    pool_images: int | None = None
    """Learn from the first this many ``pool`` images only (None = all): the same steps on less
    unlabeled data (MuST Table 4: more unlabeled images, a better student)."""

    def __post_init__(self) -> None:
        if not (self.pool or self.labeled):
            raise config_lib.ConfigError("a student variant needs pool=true or labeled=true")
        if self.pool_images is not None and (self.pool_images < 1 or not self.pool):
            raise config_lib.ConfigError("pool_images needs pool=true and a positive count")
        if self.pseudo_on_labeled and not self.labeled:
            raise config_lib.ConfigError("pseudo_on_labeled needs labeled=true")


@dataclass(frozen=True)
class TransferPlan:
    inits: tuple[str, ...] = ("scratch", "supervised", "must")
    """Rows of the comparison: ``scratch``, ``supervised`` (the classification teacher), ``must``
    (the student), ``teacher_<task>`` (any teacher, Table 4), a ``pretrain`` name (e.g. ``simclr``)
    or a ``students`` variant name."""
    tasks: dict[str, DownstreamTask] = field(default_factory=dict)
    """Downstream tasks; empty = the default suite (Fashion-MNIST + the world's transfer domain)."""
    lr_factors: tuple[float, ...] = (1.0,)
    step_factors: tuple[float, ...] = (1.0,)
    """The grid (supp. sec. 2.3): every task's learning rates times ``lr_factors`` x its step
    counts times ``step_factors``; the best cell on validation is reported on test."""
    workers: int = 1
    every_task: dict[str, Any] = field(default_factory=dict)
    """Settings replacing those of every downstream task, e.g. ``{image_size: 32, steps: [4]}``
    (the ``tiny`` preset's quick run of the default suite)."""

    def __post_init__(self) -> None:
        valid = [f.name for f in dataclasses.fields(DownstreamTask)]
        unknown = sorted(set(self.every_task) - set(valid))
        if unknown:
            raise config_lib.ConfigError(f"every_task: unknown setting(s) {unknown}; valid: {', '.join(valid)}")


@dataclass(frozen=True)
class DemoConfig:
    world: WorldDataConfig = field(default_factory=WorldDataConfig)
    model: ModelConfig = field(default_factory=demo_model)
    image_size: int = 64
    teachers: dict[str, TeacherPlan] = field(default_factory=lambda: {t: TeacherPlan() for t in TEACHER_DOMAINS})
    teacher_workers: int = 1
    """Teachers trained at once, each in its own process with one torch thread, started in the
    order of ``teachers`` (they are independent runs, MuST sec. 3.1); 1 = one after another in the
    demo's process with all its threads. Meant for CPUs: on CUDA the processes share one GPU."""
    label: LabelPlan = field(default_factory=LabelPlan)
    student: StudentPlan = field(default_factory=StudentPlan)
    students: dict[str, StudentVariant] = field(default_factory=dict)
    """More students under ``students/<name>/`` (Tables 3 and 5); each is a transfer row."""
    pretrain: dict[str, PretrainConfig] = field(default_factory=dict)
    """Self-supervised pre-trainings on the ``pool`` images under ``pretrain/<name>/`` (Table 2's
    SimCLR row); ``data`` and ``model`` are the demo's. Each is a transfer row."""
    pool: DatasetConfig | None = None
    """The shared image set the teachers label; None = the world's ``pool`` domain."""
    transfer: TransferPlan = field(default_factory=TransferPlan)
    fashion_mnist: str | None = FASHION_MNIST_ROOT
    """The default suite's classification data; null = the world's image classes (recorded)."""
    report: bool = True
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    """Overrides every training stage's ``train.precision`` and the transfer cells' (``auto``
    keeps each stage's own setting)."""
    device: str = "auto"
    """Overrides every stage's device (teachers, labeling, students, pre-training, transfer):
    ``cpu``, ``cuda``, ``cuda:N``; ``auto`` keeps each stage's own (CUDA when there is a GPU)."""


class StageClock:
    """Times each stage into ``timings.json`` (report: seconds per stage)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.timings: dict[str, float] = json.loads(path.read_text()) if path.exists() else {}

    def run(self, name: str, action: Callable[[], Any], finished: bool = False, status: str = "") -> Any:
        """Runs and times ``action``, first printing the stage and its ``status`` (starting,
        resuming from where). A stage that was ``finished`` before (it only checks its outputs)
        keeps the time recorded when it did its work."""
        start = time.perf_counter()
        print(f"\n== {name}" + (f": {status}" if status else ""), flush=True)
        result = action()
        elapsed = time.perf_counter() - start
        if not finished or name not in self.timings:
            self.timings[name] = round(elapsed, 2)
        self.path.write_text(json.dumps(self.timings, indent=2))
        return result


SKIPPED = "skipped, {out} holds its finished outputs for this config"


def skipped(name: str, out: Path) -> None:
    """Says that a training stage is not run again: its outputs in ``out`` are this config's."""
    print(f"\n== {name}: {SKIPPED.format(out=out)}", flush=True)


def training_status(out: Path, steps: int) -> str:
    """Whether a training stage starts afresh or resumes its checkpoint (the engine resumes it
    exactly), and from which step."""
    checkpoint = out / CHECKPOINT_NAME
    if not checkpoint.exists():
        return f"starting ({steps} steps) in {out}"
    step = torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True)["step"]
    return f"resuming at step {step} of {steps} from {checkpoint}"


def transfer_status(configs: Sequence[Any], out: Path) -> str:
    """How many grid cells of the transfer stage are finished already (they are only read)."""
    from must.transfer.grid import grid_cells, read_result

    cells = [(config.init_name, cell) for config in configs for name, task in config.tasks.items()
             for cell in grid_cells(name, task.lrs, task.steps, config.mode)]
    done = sum(read_result(cell.directory(out / "transfer" / init / cell.task)) is not None for init, cell in cells)
    if not done:
        return f"starting {len(cells)} grid cells"
    return f"{done} of {len(cells)} grid cells finished before, resuming the rest"


def already_done(out: Path, marker: str, config: Any) -> bool:
    """True when ``out`` holds ``marker`` and a ``config.yaml`` equal to ``config`` but for progress
    bars (on or off, e.g. teachers trained one after another or in a pool, it is the same run).

    False for a fresh or interrupted stage (same config: the engine resumes it). A directory whose
    checkpoint was trained with another config raises :class:`~must.config.ConfigError`: the engine
    would continue that checkpoint under the new config (a mix of both runs), and training it anew
    would lose it."""
    saved = out / "config.yaml"
    if not saved.exists():
        return False
    wanted = _without_progress(yaml.safe_load(yaml.safe_dump(config_lib.to_dict(config))))
    differing = config_lib.differing_keys(_without_progress(yaml.safe_load(saved.read_text())), wanted)
    if differing and (out / CHECKPOINT_NAME).exists():
        raise config_lib.ConfigError(
            f"{out} holds a run of another config (differs in {', '.join(differing)}); delete it or "
            "use another --out to train it anew")
    return not differing and (out / marker).exists()


def _without_progress(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _without_progress(item) for key, item in value.items() if key != "progress"}
    return value


def world_set(root: Path, domain: str, split: str, tasks: tuple[str, ...] = ()) -> DatasetConfig:
    return DatasetConfig(format="world", root=str(root / domain / split), tasks=tasks)


def with_overrides(config: DemoConfig, train: TrainConfig) -> TrainConfig:
    """A stage's training settings with the demo's ``precision`` and ``device`` where they are set."""
    changes = {name: getattr(config, name) for name in ("precision", "device") if getattr(config, name) != "auto"}
    return dataclasses.replace(train, **changes) if changes else train


def warn_about_precision(config: DemoConfig) -> None:
    """Resolves every training stage's precision in the demo's own process first, so a warning
    about it (bf16 on CPU) is shown once, not again by each process the stages start."""
    trains = [*(plan.train for plan in config.teachers.values()), config.student.train,
              *(plan.train for plan in config.pretrain.values())]
    for train in trains:
        resolved = with_overrides(config, train)
        resolve_precision(resolved.precision, distributed.pick_device(resolved.device))
    resolve_precision(config.precision, distributed.pick_device(config.device))  # the transfer cells'


def teacher_sets(config: DemoConfig, data: Path, task: str) -> tuple[DatasetConfig, DatasetConfig]:
    """The teacher's (train, val) datasets: the plan's, else its world domain's."""
    plan = config.teachers[task]
    if task not in TEACHER_DOMAINS and (plan.data is None or plan.val is None):
        raise config_lib.ConfigError(f"teachers.{task}: no world domain for this task; give data and val")
    domain = TEACHER_DOMAINS.get(task, "")
    return (plan.data or world_set(data, domain, "train"), plan.val or world_set(data, domain, "val"))


def teach_configs(config: DemoConfig, data: Path) -> dict[str, TeachConfig]:
    configs = {}
    for task, plan in config.teachers.items():
        train, val = teacher_sets(config, data, task)
        settings = with_overrides(config, plan.train)
        if config.teacher_workers > 1:  # several bars at once would garble each other
            settings = dataclasses.replace(settings, progress=False)
        configs[task] = TeachConfig(task=task, task_options=plan.task_options, data=train, val=val,
                                    model=config.model, train=settings,
                                    image_size=plan.image_size or config.image_size)
    return configs


def train_teachers(configs: dict[str, TeachConfig], out: Path, workers: int = 1) -> dict[str, dict[str, Any]]:
    """Trains (or resumes) each teacher into ``out/teachers/<task>``: one after another in this
    process, or ``workers`` at a time in a pool of one-thread processes. Returns each teacher's
    validation metrics and seconds, also printed as each one finishes."""
    return distributed.run_pool(list(configs), functools.partial(_train_teacher, configs, out), workers,
                                on_done=_announce_teacher)


def _train_teacher(configs: dict[str, TeachConfig], out: Path, task: str) -> dict[str, Any]:
    start = time.perf_counter()
    record = run_teach(configs[task], out / "teachers" / task)
    return {"metrics": record.metrics, "seconds": round(time.perf_counter() - start, 2)}


def _announce_teacher(task: str, result: dict[str, Any]) -> None:
    scores = ", ".join(f"{name}={value:.4f}" for name, value in result["metrics"].items())
    print(f"teacher {task}: {scores} ({result['seconds']:.0f} s)", flush=True)


def pool_set(config: DemoConfig, data: Path) -> DatasetConfig:
    return config.pool or DatasetConfig(format="folder", root=str(data / "pool" / "train" / "images"))


def student_config(config: DemoConfig, run: Path, variant: StudentVariant = StudentVariant()) -> StudentConfig:
    """The main student (``variant`` default: every teacher, the pool's pseudo labels) or a
    comparison variant."""
    data = run / "data"
    tasks = variant.tasks or tuple(config.teachers)
    unknown = [task for task in tasks if task not in config.teachers]
    if unknown:
        raise config_lib.ConfigError(f"students: unknown task(s) {unknown}; teachers: {', '.join(config.teachers)}")
    sources = []
    if variant.pool:
        images = dataclasses.replace(pool_set(config, data), limit=variant.pool_images)
        sources.append(SourceConfig(data=images, pseudo=(str(run / "pseudo" / "pool"),)))
    if variant.labeled:
        for task in tasks:
            train = dataclasses.replace(teacher_sets(config, data, task)[0], tasks=(task,))
            pseudo = (str(run / "pseudo" / f"labeled_{task}"),) if variant.pseudo_on_labeled else ()
            sources.append(SourceConfig(data=train, pseudo=pseudo))
    return StudentConfig(
        sources=tuple(sources), teachers=tuple(str(run / "teachers" / task) for task in tasks),
        tasks={name: extra for name, extra in config.student.tasks.items() if name in tasks},
        val={task: teacher_sets(config, data, task)[1] for task in tasks},
        model=config.model, train=with_overrides(config, config.student.train),
        image_size=config.image_size, randaugment=config.student.randaugment)


def label_config(config: DemoConfig, run: Path, images: DatasetConfig) -> LabelConfig:
    return LabelConfig(teachers=tuple(str(run / "teachers" / t) for t in config.teachers), data=images,
                       batch_size=config.label.batch_size, workers=config.label.workers,
                       thresholds=config.label.thresholds, device=config.device)


def video_set(config: DemoConfig, data: Path, plan: PretrainConfig) -> tuple[DatasetConfig, ...]:
    """A pre-training's further image sets: motion segmentation's frames are the world's ``video``
    clips (Doersch & Zisserman sec. 2), mixed with the pool, when the plan trains it."""
    if "motion_segmentation" not in plan.task_names or "video" not in config.world.splits:
        return plan.more_data
    return (*plan.more_data, DatasetConfig(format="video", root=str(data / "video" / "train")))


def pretrain_config(config: DemoConfig, run: Path, plan: PretrainConfig) -> PretrainConfig:
    return dataclasses.replace(plan, data=pool_set(config, run / "data"),
                               more_data=video_set(config, run / "data", plan), model=config.model,
                               image_size=config.image_size, train=with_overrides(config, plan.train))


def transfer_inits(config: DemoConfig, run: Path) -> dict[str, str | None]:
    known: dict[str, str | None] = {
        "scratch": None, "supervised": str(run / "teachers" / "classification" / "checkpoint.pt"),
        "must": str(run / "student" / "checkpoint.pt")}
    known.update({f"teacher_{task}": str(run / "teachers" / task / "checkpoint.pt") for task in config.teachers})
    known.update({name: str(run / "students" / name / "checkpoint.pt") for name in config.students})
    known.update({name: str(run / "pretrain" / name / "checkpoint.pt") for name in config.pretrain})
    unknown = [name for name in config.transfer.inits if name not in known]
    if unknown:
        raise config_lib.ConfigError(f"transfer.inits: unknown {unknown}; choose from {', '.join(known)}")
    return {name: known[name] for name in config.transfer.inits}


def with_grid(plan: TransferPlan, suite: dict[str, DownstreamTask]) -> dict[str, DownstreamTask]:
    """Widens each task's grid by the plan's learning-rate and step factors."""
    return {name: dataclasses.replace(
        task, lrs=tuple(dict.fromkeys(round(lr * f, 6) for lr in task.lrs for f in plan.lr_factors)),
        steps=tuple(dict.fromkeys(max(1, round(steps * f)) for steps in task.steps for f in plan.step_factors)))
        for name, task in suite.items()}


def run_demo(preset: str, out: Path, overrides: Sequence[str] = ()) -> int:
    from must.label.labeler import label_dataset
    from must.stages.pretrain import run_pretrain
    from must.stages.student import launch_student, resolved_config
    from must.transfer.config import TransferConfig
    from must.transfer.run import all_finished, run_transfers
    from must.world import is_complete

    config = config_lib.load(DemoConfig, preset, overrides)
    distributed.pick_device(config.device)  # a device this machine lacks stops the demo before any stage
    out.mkdir(parents=True, exist_ok=True)
    config_lib.save(config, out / "config.yaml")
    warn_about_precision(config)
    clock = StageClock(out / "timings.json")
    total = time.perf_counter()
    data = out / "data"
    complete = [is_complete(data / domain / split)
                for domain, splits in config.world.splits.items() for split in splits]
    clock.run("world", lambda: generate_world(config.world, data), finished=all(complete),
              status=SKIPPED.format(out=data) if all(complete) else
              f"generating {complete.count(False)} of {len(complete)} splits into {data}"
              + (" (images already written are kept)" if data.exists() else ""))

    pending = {}
    for task, teach in teach_configs(config, data).items():
        if already_done(out / "teachers" / task, "teacher.json", teach):
            skipped(f"teacher/{task}", out / "teachers" / task)
        else:
            pending[task] = teach
    statuses = {task: training_status(out / "teachers" / task, teach.train.steps) for task, teach in pending.items()}
    if config.teacher_workers > 1 and len(pending) > 1:
        clock.run("teachers", lambda: train_teachers(pending, out, config.teacher_workers),
                  status="; ".join(f"{task} {status}" for task, status in statuses.items()))
    else:
        for task, teach in pending.items():
            clock.run(f"teacher/{task}", lambda: train_teachers({task: teach}, out), status=statuses[task])

    labeled = sorted({task for variant in config.students.values() if variant.pseudo_on_labeled
                      for task in (variant.tasks or config.teachers)})
    # Table 5: the teachers' labeled sets get the other tasks' pseudo labels (read as the student reads them)
    label_sets = {"pool": pool_set(config, data),
                  **{f"labeled_{task}": teacher_sets(config, data, task)[0] for task in labeled}}
    for name, images in label_sets.items():
        target = out / "pseudo" / name
        finished = (target / MANIFEST_NAME).exists()  # the labeler checks it was made by these teachers
        status = (SKIPPED.format(out=target) if finished else f"resuming in {target} (finished shards are kept)"
                  if target.exists() else f"starting into {target}")
        clock.run("label" if name == "pool" else f"label/{name}",
                  lambda: label_dataset(label_config(config, out, images), target), finished=finished, status=status)

    students = {"student": (student_config(config, out), out / "student")}
    students.update({f"students/{name}": (student_config(config, out, variant), out / "students" / name)
                     for name, variant in config.students.items()})
    for name, (student, directory) in students.items():
        if already_done(directory, "student.json", resolved_config(student)):
            skipped(name, directory)
        else:
            clock.run(name, lambda: launch_student(student, directory, config.student.processes),
                      status=training_status(directory, student.train.steps))
    for name, plan in config.pretrain.items():
        pretrain = pretrain_config(config, out, plan)
        directory = out / "pretrain" / name
        if already_done(directory, "pretrain.json", pretrain):
            skipped(f"pretrain/{name}", directory)
        else:
            clock.run(f"pretrain/{name}", lambda: run_pretrain(pretrain, directory),
                      status=training_status(directory, pretrain.train.steps))

    suite = with_grid(config.transfer, with_settings(
        config.transfer.tasks or default_suite(data / "transfer", config.fashion_mnist),
        config.transfer.every_task, "transfer.every_task"))
    transfers = [TransferConfig(init=init, init_name=name, tasks=suite, model=config.model,
                                workers=config.transfer.workers, precision=config.precision,
                                device=config.device)
                 for name, init in transfer_inits(config, out).items()]
    finished = all_finished(transfers, out)
    clock.run("transfer", lambda: run_transfers(transfers, out),  # one pool of cells for every init
              finished=finished, status=SKIPPED.format(out=out / "transfer") if finished
              else transfer_status(transfers, out))

    if config.report:
        from must.report.build import write_report

        clock.run("report", lambda: write_report(out))
    clock.timings["total"] = round(time.perf_counter() - total, 2)
    clock.path.write_text(json.dumps(clock.timings, indent=2))
    results_path = out / "report" / "results.json"
    if config.report and results_path.exists():  # the report was written before its own time was known
        results = json.loads(results_path.read_text())
        results["timings"] = clock.timings
        results_path.write_text(json.dumps(results, indent=2))
    print_summary(out)
    return 0


def print_summary(run: Path) -> None:
    """The demo's table: transfer score per pre-training and downstream task (paper Table 2), as
    the report's :func:`~must.report.tables.transfer_table` builds it."""
    results_path = run / "report" / "results.json"
    if not results_path.exists():
        print(f"\nrun directory: {run}")
        return
    from must.report.tables import to_text, transfer_table

    results = json.loads(results_path.read_text())
    table = transfer_table(results.get("transfer", {}))
    if table is not None:
        print("\n" + to_text(table))
    pairs = results.get("teacher_vs_student", {})
    if pairs:
        print("teacher vs student (validation): " + ", ".join(
            f"{t} {p['teacher']:.3f} -> {p['student']:.3f}" for t, p in pairs.items()))
    timings = results.get("timings", {})
    if "total" in timings:
        print(f"total time: {timings['total'] / 60:.1f} min")
    print(f"report: {run / 'report' / 'index.html'}")


SUMMARY = "the whole pipeline on the embedded world"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Run the whole pipeline on the embedded procedural world: generate data, train teachers, "
        "pseudo-label the shared pool, train the student, transfer, report.")
    parser.add_argument("--preset", default="demo",
                        help="tiny (every stage in well under a minute; its numbers mean nothing), "
                             "demo (minutes on a CPU), study, paper, or a YAML path")
    parser.add_argument("--out", type=Path, default=Path("runs/demo"), help="run directory")
    parser.add_argument("overrides", nargs="*", metavar="key.sub=value",
                        help="config overrides, e.g. train.steps=200 model.width=0.5")


def run(args: argparse.Namespace) -> int:
    return run_demo(args.preset, args.out, args.overrides)
