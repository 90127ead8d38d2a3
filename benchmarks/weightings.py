"""Loss weighting methods on the demo student: each method trains the demo's student on the demo's
pseudo labels at a reduced schedule, then its own-task validation metrics and its Delta_m% against
the single-task teachers (:func:`must.report.results.delta_m_percent`) are collected into one JSON
file with the commit, the time and the exact commands.

The schedule is far shorter than the demo's (1280 steps of 32 images) so that every method fits a
few CPU minutes: the numbers compare methods at the very start of training, not trained students.

    python -m benchmarks.weightings --run-dir /work/demo-run2 --out /tmp/must-weightings \\
        --json docs/measurements/weightings.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from benchmarks.common import command_line, run_stamp
from must.report.results import collect_teacher_vs_student, delta_m_percent, student_metrics, teacher_metrics

METHODS = ["must", "equal", "uncertainty", "pcgrad", "upgrad", "nash_mtl", "famo", "dwa"]
LAUNCH = "runs/demo/student/launch.yaml"
TASKS = ["detection", "segmentation", "depth", "classification"]


def train_command(method: str, out: Path, steps: int, batch_size: int, val_limit: int) -> list[str]:
    """``must train`` of the demo student (run from the demo's directory) with ``method``."""
    return [sys.executable, "-m", "must.cli", "train", "--config", LAUNCH, "--out", str(out / method),
            f"train.steps={steps}", f"train.batch_size={batch_size}", f"train.weighting.method={method}",
            "train.progress=false", "train.checkpoint_every=0",
            *[f"val.{task}.limit={val_limit}" for task in TASKS]]


def measure(method: str, args: argparse.Namespace, teachers: dict[str, dict[str, float]]) -> dict[str, Any]:
    """Trains ``method`` (or, with ``--reuse``, reads a finished run of the same command)."""
    command = train_command(method, args.out, args.steps, args.batch_size, args.val_limit)
    reused = args.reuse and (args.out / method / "student.json").exists()
    started = time.perf_counter()
    if not reused:
        # one torch thread per training (OMP_NUM_THREADS): parallel runs of 2 threads each on 2 cores
        # wait on each other's OpenMP barriers at every op and run many times slower (benchmarks/README.md)
        environment = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
        run = subprocess.run(command, cwd=args.run_dir, capture_output=True, text=True, env=environment)
        if run.returncode != 0:
            return {"command": command, "seconds": time.perf_counter() - started, "error": run.stderr[-2000:]}
    seconds = None if reused else time.perf_counter() - started
    student = student_metrics(args.out / method)
    entries = collect_teacher_vs_student(teachers, student)
    return {"command": command, "seconds": seconds, "reused_finished_run": reused, "own_task": entries,
            "delta_m": delta_m_percent(entries)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=Path, default=Path("/work/demo-run2"),
                        help="directory holding runs/demo (the demo's pseudo labels and teachers)")
    parser.add_argument("--out", type=Path, default=Path("/tmp/must-weightings"))
    parser.add_argument("--json", type=Path, default=Path("docs/measurements/weightings.json"))
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--val-limit", type=int, default=40, help="validation images per task")
    parser.add_argument("--methods", nargs="+", default=METHODS)
    parser.add_argument("--reuse", action="store_true",
                        help="read methods whose run under --out has finished instead of training them again")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of each training")
    parser.add_argument("--parallel", type=int, default=1, help="trainings run at once (seconds are then "
                        "wall times under each other's contention)")
    args = parser.parse_args()
    teachers = dict(teacher_metrics(args.run_dir / "runs/demo/teachers" / task) for task in TASKS)
    record: dict[str, Any] = {
        **run_stamp(), "command": command_line("benchmarks.weightings"),
        "schedule": {"steps": args.steps, "batch_size": args.batch_size, "val_images_per_task": args.val_limit,
                     "parallel": args.parallel, "threads": args.threads,
                     "note": "reduced: the demo student trains 1280 steps of 32 images on every validation image; "
                             "teachers' metrics are on their full validation sets"},
        "teachers": {task: entry["teacher"] for task, entry in collect_teacher_vs_student(teachers, teachers).items()},
        "methods": {},
    }
    def one(method: str) -> None:
        record["methods"][method] = measure(method, args, teachers)
        print(method, json.dumps({k: v for k, v in record["methods"][method].items() if k != "command"})[:400],
              flush=True)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(record, indent=2) + "\n")

    with ThreadPoolExecutor(args.parallel) as pool:
        list(pool.map(one, args.methods))
    record["methods"] = {method: record["methods"][method] for method in args.methods}
    args.json.write_text(json.dumps(record, indent=2) + "\n")

if __name__ == "__main__":
    main()
