"""Every number the report shows, collected from one run directory.

The run directory is the one every stage writes::

    teachers/<task>/{teacher.json, metrics.jsonl}      specialized teachers (MuST sec. 3.1)
    student/{student.json, metrics.jsonl}              the multi-task student (sec. 3.3)
    transfer/<init>/<task>/{grid.jsonl, best.json}     fine-tuning grid search (sec. 3.5 / 4)
    transfer/<init>/<task>/best_linear.json            linear probe of the same init
    transfer/<init>/<task>/best_knn.json               k-NN on its frozen features
    pretrain/<method>/checkpoint.pt                    a self-supervised trunk (its lasso, if any)
    timings.json                                       {"stage": seconds}

:func:`collect_results` turns them into one JSON-ready dict, the content of ``results.json``::

    transfer[init][task]      = {"metric", "value", "val_value", "lr", "steps", "grid_cells",
                                 "delta_vs_supervised" (when a supervised row has the task),
                                 "dataset" (its data's format), "substitutes" (the dataset
                                 it stands in for, when the suite's own was missing)}
    transfer_mean[init]       = the mean of the row's values, for rows with every column of the
                                table (all higher-is-better): the single score Table 3's ladder reads
    linear_probe[init][task]  = the same for the frozen-trunk probe: ``best_linear.json``
                                (``must transfer --mode linear``), present only when some exist
    knn[init][task]           = the same for k-NN top-1 (``best_knn.json``, ``--mode knn``: no grid)
    teacher_vs_student[task]  = {"metric", "teacher", "student", "delta"}   (paper Table 4)
    delta_m                   = Delta_m% of the student against the teachers (:func:`delta_m_percent`),
                                null when no task has both numbers
    teachers / student        = every validation metric found, {task: {metric: value}}
    students[name]            = the student and each ``students/<name>`` variant:
                                {"metrics": {task: value}, "delta_m"} (:func:`collect_student_variants`)
    lasso[method]             = a pre-training's learned lasso, {"tasks", "units", "alpha"} with
                                ``alpha[task][unit]`` null where a task has no weight
                                (:func:`collect_lassos`), present only when some pre-training has one
    timings                   = {stage: seconds}
    notes                     = what is missing and therefore left out

Every reported metric is higher-is-better; a metric known to be an error (``rmse``, ...) is kept
as is and flagged with ``"lower_is_better": true`` (the best row then is the lowest).
Missing pieces never raise: they become notes.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from must.errors import MustError
from must.files import write_atomic
from must.models.lasso import read_lasso_matrix
from must.models.records import StudentRecord, read_student_record
from must.tasks import TASK_BUILDERS
from must.train import checkpoint as checkpoints

TASK_ORDER = ("classification", "detection", "segmentation", "depth", "normals")
"""Columns in the paper's order (MuST Table 2: CIFAR-100, Pascal det., Pascal seg., NYU, DIODE)."""
INIT_ORDER = ("scratch", "supervised", "simclr", "supervised_multitask")
"""Rows: baselines first; MuST rows (``must_*`` ladder, then ``must``) follow, others in between."""
BASELINE = "supervised"
LOWER_IS_BETTER = frozenset({"abs_rel", "rmse", "mse", "mean_angle", "loss", "error"})


def read_json(path: Path) -> Any | None:
    """The JSON in ``path``, or ``None`` when it is missing or unreadable (a report never crashes
    on a half-written run)."""
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """One dict per line; a line cut short by a killed writer is skipped."""
    records = []
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return records
    for line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def lower_is_better(metric: str) -> bool:
    return metric.split("/")[-1] in LOWER_IS_BETTER


def primary_metric(task: str) -> str | None:
    """The metric a task reports in tables (``Task.primary_metric``), ``None`` for unknown tasks."""
    builder = TASK_BUILDERS.get(task)
    return getattr(builder, "primary_metric", None)


def order_tasks(names: Any) -> list[str]:
    names = set(names)
    return [t for t in TASK_ORDER if t in names] + sorted(names - set(TASK_ORDER))


def order_inits(names: Any) -> list[str]:
    """Baselines, then other pre-trainings, then the MuST ladder (``must_*``), ``must`` last."""
    names = set(names)
    first = [n for n in INIT_ORDER if n in names]
    ladder = sorted(n for n in names if n.startswith("must_"))
    last = ["must"] if "must" in names else []
    middle = sorted(names - set(first) - set(ladder) - set(last))
    return first + middle + ladder + last


def eval_metrics(records: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """The last ``eval/<task>/<metric>`` value of each key in a metrics.jsonl, by task."""
    result: dict[str, dict[str, float]] = {}
    for record in records:
        for key, value in record.items():
            parts = key.split("/")
            if len(parts) == 3 and parts[0] == "eval" and is_number(value):
                result.setdefault(parts[1], {})[parts[2]] = float(value)
    return result


def nested_metrics(metrics: Any, task: str | None = None) -> dict[str, dict[str, float]]:
    """``{task: {metric: v}}`` from any of ``{task: {metric: v}}``, ``{"task/metric": v}`` or, with
    ``task`` given, a flat ``{metric: v}``."""
    result: dict[str, dict[str, float]] = {}
    if not isinstance(metrics, Mapping):
        return result
    for key, value in metrics.items():
        if isinstance(value, Mapping):
            numbers = {str(k): float(v) for k, v in value.items() if is_number(v)}
            result.setdefault(str(key), {}).update(numbers)
        elif is_number(value):
            name, _, metric = str(key).removeprefix("eval/").rpartition("/")
            if name or task is not None:
                result.setdefault(name or str(task), {})[metric] = float(value)
    return result


def student_metrics(student_dir: Path) -> dict[str, dict[str, float]]:
    """``student.json``'s ``"metrics"`` if present, else the last evaluations in metrics.jsonl."""
    record = read_student(student_dir)
    found = nested_metrics(record.metrics) if record is not None else {}
    if found:
        return found
    return eval_metrics(read_jsonl(student_dir / "metrics.jsonl"))


def read_student(student_dir: Path) -> StudentRecord | None:
    """``student.json``, or ``None`` when it is missing or unreadable (like :func:`read_json`)."""
    try:
        return read_student_record(student_dir)
    except (OSError, MustError):
        return None


def missing_student_note(student_dir: Path) -> str:
    """Why a run has no student metrics: no student yet, a student still training, or one trained
    without validation sets (``must train`` without ``--val`` records no metrics)."""
    left_out = "teacher-vs-student table left out"
    if not student_dir.is_dir():
        return f"no student metrics: no student/ directory; {left_out}"
    if read_student(student_dir) is not None:
        return ("no student metrics: student/student.json exists but holds no validation metrics, the "
                f"student was trained without validation sets (must train without --val); {left_out}")
    return ("no student metrics: student/student.json is missing (the student has not finished) and "
            f"student/metrics.jsonl holds no evaluation; {left_out}")


def teacher_metrics(teacher_dir: Path) -> tuple[str, dict[str, float]]:
    """(task, validation metrics) of one teacher: ``teacher.json``'s ``"metrics"``, else the last
    evaluations in its metrics.jsonl."""
    record = read_json(teacher_dir / "teacher.json")
    record = record if isinstance(record, Mapping) else {}
    task = str(record.get("task") or teacher_dir.name)
    found = nested_metrics(record.get("metrics"), task).get(task)
    if not found:
        found = eval_metrics(read_jsonl(teacher_dir / "metrics.jsonl")).get(task, {})
    return task, found


def pick_metric(task: str, *candidates: Mapping[str, float]) -> str | None:
    """The task's primary metric if every candidate has it, else the first metric they share."""
    shared = [m for m in candidates[0] if all(m in c for c in candidates[1:])] if candidates else []
    primary = primary_metric(task)
    if primary in shared:
        return primary
    higher = [m for m in shared if not lower_is_better(m)]
    return (higher or shared or [None])[0]


def transfer_entry(record: Mapping[str, Any], grid: list[dict[str, Any]],
                   mode: str | None = None) -> dict[str, Any]:
    """One table cell's numbers: the test value of the best grid cell and how it was chosen;
    ``grid_cells`` counts the cells of ``mode`` (default: the record's own, else fine-tuning)."""
    metric = str(record.get("metric") or primary_metric(str(record.get("task"))) or "value")
    entry: dict[str, Any] = {"metric": metric, "value": float(record["value"])}
    for key in ("val_value", "lr"):
        if is_number(record.get(key)):
            entry[key] = float(record[key])
    if is_number(record.get("steps")):
        entry["steps"] = int(record["steps"])
    for key in ("dataset", "substitutes"):  # which data the column measured, and what it replaced
        if isinstance(record.get(key), str):
            entry[key] = record[key]
    mode = mode or record.get("mode", "finetune")
    entry["grid_cells"] = sum(1 for cell in grid if cell.get("mode", mode) == mode)
    if lower_is_better(metric):
        entry["lower_is_better"] = True
    return entry


def record_mode(record: Mapping[str, Any], path: Path) -> str:
    """``"linear"``, ``"knn"`` or ``"finetune"``: the record's own ``mode``, else its file's name
    (``must transfer --mode linear`` writes ``best_linear.json`` beside ``best.json``, ``--mode knn``
    ``best_knn.json``)."""
    mode = record.get("mode")
    if mode is None:
        mode = {"best_linear.json": "linear", "best_knn.json": "knn"}.get(path.name, "finetune")
    return mode if mode in ("linear", "knn") else "finetune"


def collect_transfer(run_dir: Path, notes: list[str]) -> dict[str, dict[str, dict[str, dict[str, Any]]]]:
    """``{mode: {init: {task: entry}}}`` from every ``transfer/<init>/<task>/best*.json``; the
    record's own ``init`` / ``task`` win over the directory names."""
    found: dict[str, dict[str, dict[str, dict[str, Any]]]] = {}
    for path in sorted((run_dir / "transfer").glob("*/*/best*.json")):
        record = read_json(path)
        if not isinstance(record, Mapping) or not is_number(record.get("value")):
            notes.append(f"{path.relative_to(run_dir)}: no numeric 'value'; left out")
            continue
        init = str(record.get("init") or path.parent.parent.name)
        task = str(record.get("task") or path.parent.name)
        mode = record_mode(record, path)
        row = found.setdefault(mode, {}).setdefault(init, {})
        if task in row:
            notes.append(f"{path.relative_to(run_dir)}: a second {mode} result for {init}/{task}; "
                         "the last one (by file name) is shown")
        row[task] = transfer_entry(record, read_jsonl(path.parent / "grid.jsonl"), mode)
    for table in found.values():
        add_deltas(table)
    substituted = {(task, entry.get("dataset", "other"), entry["substitutes"]) for table in found.values()
                   for row in table.values() for task, entry in row.items() if "substitutes" in entry}
    notes.extend(f"transfer column '{task}': {dataset} data stands in for {missing}"
                 for task, dataset, missing in sorted(substituted))
    return found


def add_deltas(table: dict[str, dict[str, dict[str, Any]]]) -> None:
    """``delta_vs_supervised`` = value - the supervised row's value, as in the paper's tables."""
    baseline = table.get(BASELINE, {})
    for init, row in table.items():
        for task, entry in row.items():
            reference = baseline.get(task)
            if init != BASELINE and reference is not None and reference["metric"] == entry["metric"]:
                entry["delta_vs_supervised"] = entry["value"] - reference["value"]


def row_means(table: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> dict[str, float]:
    """``{init: mean value}`` over the table's columns, for the rows that have every column; empty
    when a column is lower-is-better (a mean of mixed directions means nothing)."""
    tasks = {task for row in table.values() for task in row}
    if any(entry.get("lower_is_better") for row in table.values() for entry in row.values()):
        return {}
    return {init: sum(row[task]["value"] for task in sorted(tasks)) / len(tasks)
            for init, row in table.items() if tasks and set(row) == tasks}


def collect_teacher_vs_student(teachers: Mapping[str, Mapping[str, float]],
                               student: Mapping[str, Mapping[str, float]]) -> dict[str, dict[str, Any]]:
    """Paper Table 4: each teacher's own-task validation metric next to the student's on the same
    task (the student learned that task from the teacher's pseudo labels, MuST sec. 3.2)."""
    result: dict[str, dict[str, Any]] = {}
    for task in order_tasks(teachers):
        own, learned = teachers[task], student.get(task, {})
        metric = (pick_metric(task, own, learned) if learned else None) or pick_metric(task, own)
        if metric is None:
            continue
        entry: dict[str, Any] = {"metric": metric, "teacher": own[metric], "student": learned.get(metric)}
        if entry["student"] is not None:
            entry["delta"] = entry["student"] - entry["teacher"]
        if lower_is_better(metric):
            entry["lower_is_better"] = True
        result[task] = entry
    return result


def delta_m_percent(entries: Mapping[str, Mapping[str, Any]]) -> float | None:
    """Delta_m% (Maninis et al., CVPR 2019, sec. 4; Vandenhende et al., TPAMI 2021, eq. 10): the
    mean over tasks of (-1)^{l_i} (M_m,i - M_b,i) / M_b,i * 100, l_i = 1 when lower is better, the
    baseline M_b,i the single-task model: here the teacher, on the one metric per task of
    ``teacher_vs_student``'s ``entries``. Positive = the multi-task student beats its teachers on
    average. Tasks without both numbers, or with a zero baseline, are left out; None if none is left."""
    terms = []
    for entry in entries.values():
        student, teacher = entry.get("student"), entry.get("teacher")
        if student is None or teacher is None or teacher == 0:
            continue
        sign = -1.0 if entry.get("lower_is_better") else 1.0
        terms.append(sign * (student - teacher) / abs(teacher) * 100.0)
    return sum(terms) / len(terms) if terms else None


def collect_student_variants(run_dir: Path, teachers: Mapping[str, Mapping[str, float]],
                             student: Mapping[str, Mapping[str, float]]) -> dict[str, dict[str, Any]]:
    """The main student and every comparison variant under ``students/<name>`` (other labels, other
    loss weightings), each as ``{"metrics": {task: value}, "delta_m": Delta_m%}`` on the metric per
    task of ``teacher_vs_student``; empty when the run has no variants."""
    variants = {path.name: student_metrics(path) for path in sorted((run_dir / "students").glob("*"))
                if path.is_dir()}
    variants = {name: metrics for name, metrics in variants.items() if metrics}
    if not variants:
        return {}
    result = {}
    for name, metrics in {"student": student, **variants}.items():
        entries = collect_teacher_vs_student(teachers, metrics)
        result[name] = {"metrics": {task: entry["student"] for task, entry in entries.items()},
                        "delta_m": delta_m_percent(entries)}
    return result


def collect_lassos(run_dir: Path) -> dict[str, dict[str, Any]]:
    """Each ``pretrain/<method>/checkpoint.pt``'s learned lasso (Doersch & Zisserman 2017 sec.
    4.2) as :func:`~must.models.lasso.read_lasso_matrix`'s table, NaN (no such weight) as None so
    the table is JSON; pre-trainings without a lasso are left out."""
    tables = {}
    for path in sorted((run_dir / "pretrain").glob("*/checkpoint.pt")):
        table = read_lasso_matrix(checkpoints.load(path))
        if table is not None:
            table["alpha"] = [[None if math.isnan(value) else value for value in row] for row in table["alpha"]]
            tables[path.parent.name] = table
    return tables


def collect_timings(run_dir: Path, notes: list[str]) -> dict[str, float]:
    data = read_json(run_dir / "timings.json")
    if not isinstance(data, Mapping):
        notes.append("no timings.json: stage timings left out")
        return {}
    return {str(stage): float(seconds) for stage, seconds in data.items() if is_number(seconds)}


def collect_results(run_dir: str | Path) -> dict[str, Any]:
    """Everything ``results.json`` holds (module docstring); missing parts become ``notes``."""
    run_dir = Path(run_dir)
    notes: list[str] = []
    teachers = {}
    for directory in sorted(p for p in (run_dir / "teachers").glob("*") if p.is_dir()):
        task, metrics = teacher_metrics(directory)
        if metrics:
            teachers[task] = metrics
        else:
            notes.append(f"teacher '{directory.name}': no validation metrics found")
    if not teachers:
        notes.append("no teachers with metrics under teachers/: teacher-vs-student table left out")
    student = student_metrics(run_dir / "student") if (run_dir / "student").is_dir() else {}
    if not student:
        notes.append(missing_student_note(run_dir / "student"))
    transfer = collect_transfer(run_dir, notes)
    if not transfer.get("finetune"):
        notes.append("no transfer results (transfer/<init>/<task>/best.json): transfer table left out")
    elif BASELINE not in transfer["finetune"]:
        notes.append(f"no '{BASELINE}' transfer row: differences in parentheses left out")
    teacher_vs_student = collect_teacher_vs_student(teachers, student)
    results: dict[str, Any] = {
        "run": run_dir.resolve().name,
        "transfer": transfer.get("finetune", {}),
        "transfer_mean": row_means(transfer.get("finetune", {})),
        "teacher_vs_student": teacher_vs_student,
        "delta_m": delta_m_percent(teacher_vs_student),
        "teachers": teachers,
        "student": student,
        "students": collect_student_variants(run_dir, teachers, student),
        "timings": collect_timings(run_dir, notes),
    }
    if transfer.get("linear"):
        results["linear_probe"] = transfer["linear"]
    if transfer.get("knn"):
        results["knn"] = transfer["knn"]
    lassos = collect_lassos(run_dir)
    if lassos:
        results["lasso"] = lassos
    results["notes"] = notes
    return results


def write_results(results: Mapping[str, Any], path: Path) -> Path:
    """``results.json``, written atomically (a reader never sees half a file)."""
    return write_atomic(path, json.dumps(results, indent=2, sort_keys=False) + "\n")
