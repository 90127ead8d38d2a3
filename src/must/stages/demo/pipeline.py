"""``must demo``'s stages in order, each timed by the :class:`~must.stages.demo.progress.StageClock`
and skipped when its outputs exist for the same config: generate the world -> train the teachers
(MuST sec. 3.1) -> pseudo-label the pool (sec. 3.2) -> train the student and its variants
(sec. 3.3-3.4) -> self-supervised pre-trainings -> transfer every row to every downstream task
(sec. 3.5) -> the report.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from must import config as config_lib
from must import distributed
from must.label.manifest import MANIFEST_NAME
from must.models.records import PRETRAIN_RECORD, STUDENT_RECORD, TEACHER_RECORD
from must.stages.demo.config import DemoConfig
from must.stages.demo.progress import (SKIPPED, StageClock, already_done, skipped, training_status,
                                       transfer_status)
from must.stages.demo.stage_configs import (label_config, pool_set, pretrain_config, student_config,
                                            teach_configs, teacher_sets, transfer_inits, warn_about_precision,
                                            with_grid)
from must.stages.demo.summary import print_summary
from must.stages.teach import TeachConfig, run_teach
from must.transfer.config import TransferConfig, default_suite, with_settings
from must.world.splits import generate_world


def run_demo(preset: str, out: Path, overrides: Sequence[str] = ()) -> int:
    """Runs (or resumes) the demo of ``preset`` (a shipped name or a YAML path) with
    ``overrides`` into the run directory ``out``; returns the exit code."""
    config = config_lib.load(DemoConfig, preset, overrides)
    distributed.pick_device(config.device)  # a device this machine lacks stops the demo before any stage
    out.mkdir(parents=True, exist_ok=True)
    config_lib.save(config, out / "config.yaml")
    warn_about_precision(config)
    clock = StageClock(out / "timings.json")
    start = time.perf_counter()
    world_stage(config, out, clock)
    teacher_stage(config, out, clock)
    label_stage(config, out, clock)
    student_stage(config, out, clock)
    pretrain_stage(config, out, clock)
    transfer_stage(config, out, clock)
    report_stage(config, out, clock, start)
    print_summary(out)
    return 0


def world_stage(config: DemoConfig, out: Path, clock: StageClock) -> None:
    """Generates the world's splits that are not complete yet."""
    from must.world import is_complete

    data = out / "data"
    complete = [is_complete(data / domain / split)
                for domain, splits in config.world.splits.items() for split in splits]
    clock.run("world", lambda: generate_world(config.world, data), finished=all(complete),
              status=SKIPPED.format(out=data) if all(complete) else
              f"generating {complete.count(False)} of {len(complete)} splits into {data}"
              + (" (images already written are kept)" if data.exists() else ""))


def teacher_stage(config: DemoConfig, out: Path, clock: StageClock) -> None:
    """The teachers not finished for this config: one stage each, or one stage for a pool of
    ``teacher_workers`` processes."""
    pending = {}
    for task, teach in teach_configs(config, out / "data").items():
        if already_done(out / "teachers" / task, TEACHER_RECORD, teach):
            skipped(f"teacher/{task}", out / "teachers" / task)
        else:
            pending[task] = teach
    statuses = {task: training_status(out / "teachers" / task, pending[task].train.steps) for task in pending}
    if config.teacher_workers > 1 and len(pending) > 1:
        clock.run("teachers", lambda: train_teachers(pending, out, config.teacher_workers),
                  status="; ".join(f"{task} {status}" for task, status in statuses.items()))
    else:
        for task, teach in pending.items():
            clock.run(f"teacher/{task}", lambda: train_teachers({task: teach}, out),
                      status=statuses[task])


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


def label_stage(config: DemoConfig, out: Path, clock: StageClock) -> None:
    """Pseudo labels for the pool and, for Table 5's variants, for the teachers' labeled sets
    (the other tasks' labels, read as the student reads them)."""
    from must.label.labeler import label_dataset

    data = out / "data"
    labeled = sorted({task for variant in config.students.values() if variant.pseudo_on_labeled
                      for task in (variant.tasks or config.teachers)})
    label_sets = {"pool": pool_set(config, data),
                  **{f"labeled_{task}": teacher_sets(config, data, task)[0] for task in labeled}}
    for name, images in label_sets.items():
        target = out / "pseudo" / name
        finished = (target / MANIFEST_NAME).exists()  # the labeler checks it was made by these teachers
        status = (SKIPPED.format(out=target) if finished else f"resuming in {target} (finished shards are kept)"
                  if target.exists() else f"starting into {target}")
        clock.run("label" if name == "pool" else f"label/{name}",
                  lambda: label_dataset(label_config(config, out, images), target), finished=finished, status=status)


def student_stage(config: DemoConfig, out: Path, clock: StageClock) -> None:
    """The student, then every comparison variant under ``students/<name>``."""
    from must.stages.student import launch_student, resolved_config

    students = {"student": (student_config(config, out), out / "student")}
    students.update({f"students/{name}": (student_config(config, out, variant), out / "students" / name)
                     for name, variant in config.students.items()})
    for name, (student, directory) in students.items():
        if already_done(directory, STUDENT_RECORD, resolved_config(student)):
            skipped(name, directory)
        else:
            clock.run(name, lambda: launch_student(student, directory, config.student.processes),
                      status=training_status(directory, student.train.steps))


def pretrain_stage(config: DemoConfig, out: Path, clock: StageClock) -> None:
    """Every self-supervised pre-training on the pool's images, under ``pretrain/<name>``."""
    from must.stages.pretrain import run_pretrain

    for name in config.pretrain:
        pretrain = pretrain_config(config, out, name)
        directory = out / "pretrain" / name
        if already_done(directory, PRETRAIN_RECORD, pretrain):
            skipped(f"pretrain/{name}", directory)
        else:
            clock.run(f"pretrain/{name}", lambda: run_pretrain(pretrain, directory),
                      status=training_status(directory, pretrain.train.steps))


def transfer_stage(config: DemoConfig, out: Path, clock: StageClock) -> None:
    """Every row (``transfer.inits``) fine-tuned on every downstream task over the grid, in one
    pool of cells; then, with ``transfer.knn``, k-NN of every row."""
    from must.transfer.run import all_finished, run_transfers

    transfers = transfer_configs(config, out)
    finished = all_finished(transfers, out)
    clock.run("transfer", lambda: run_transfers(transfers, out),  # one pool of cells for every init
              finished=finished, status=SKIPPED.format(out=out / "transfer") if finished
              else transfer_status(transfers, out))
    if config.transfer.knn:
        knn_stage(transfers, out, clock)


def transfer_configs(config: DemoConfig, out: Path) -> list[TransferConfig]:
    """One transfer per row: its checkpoint, the suite and the model, each with the row's own
    changes (``rows.<name>``, applied as ``every_task`` is), then widened by the grid."""
    suite = with_settings(config.transfer.tasks or default_suite(out / "data" / "transfer", config.fashion_mnist),
                          config.transfer.every_task, "transfer.every_task")
    transfers = []
    for name, init in transfer_inits(config, out).items():
        row = config.rows.get(name)
        tasks = with_grid(config.transfer, with_settings(suite, row.transfer if row is not None else {},
                                                         f"rows.{name}.transfer"))
        transfers.append(TransferConfig(init=init, init_name=name, tasks=tasks, model=config.row_model(name),
                                        workers=config.transfer.workers, precision=config.precision,
                                        device=config.device))
    return transfers


def knn_stage(transfers: Sequence[TransferConfig], out: Path, clock: StageClock) -> None:
    """k-NN top-1 of every row on the suite's classification tasks (:mod:`must.transfer.knn`), each
    row skipped while its ``best_knn.json`` files were made for its current config (checkpoint
    content, data, model): a retrained or changed row is evaluated again."""
    from must.transfer.knn import knn_is_current, run_knn

    for transfer in transfers:
        knn = config_lib.replace(transfer, mode="knn", tasks={
            name: spec for name, spec in transfer.tasks.items() if spec.task == "classification"})
        if not knn.tasks:
            continue
        directory = out / "transfer" / knn.init_name
        if knn_is_current(knn, out):
            skipped(f"knn/{knn.init_name}", directory)
        else:
            clock.run(f"knn/{knn.init_name}", lambda: run_knn(knn, out), status=f"k-NN of {', '.join(knn.tasks)}")


def report_stage(config: DemoConfig, out: Path, clock: StageClock, start: float) -> None:
    """The report, then the total time into ``timings.json`` and the report's ``results.json``
    (the report was written before its own time was known)."""
    if config.report:
        from must.report.build import write_report

        clock.run("report", lambda: write_report(out))
    clock.timings["total"] = round(time.perf_counter() - start, 2)
    clock.path.write_text(json.dumps(clock.timings, indent=2))
    results_path = out / "report" / "results.json"
    if config.report and results_path.exists():
        results = json.loads(results_path.read_text())
        results["timings"] = clock.timings
        results_path.write_text(json.dumps(results, indent=2))
