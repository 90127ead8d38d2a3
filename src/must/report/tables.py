"""The report's tables, built once from ``results.json``'s dict and rendered to Markdown or HTML.

* :func:`transfer_table`: one row per pre-training, one column per downstream task, the
  difference to the supervised row in parentheses and the best of each column in bold
  (MuST Tables 2, 3, 5 and 6 share this layout).
* :func:`teacher_student_table`: each teacher's validation metric beside the student's on the same
  task (MuST Table 4, "Performance" columns).
* :func:`selection_table`: what the grid search chose per pre-training and task (MuST sec. 3.5).
* :func:`timings_table`: seconds per pipeline stage.

Each renders with :func:`to_markdown`, :func:`to_html` or :func:`to_text` (the demo's summary).

Fractions in [0, 1] are shown as percentages with one decimal, as the paper prints them.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from must.report.results import BASELINE, order_inits, order_tasks, row_means

METRIC_LABELS = {
    "top1": "top-1", "top5": "top-5", "ap50_voc": "AP50 (VOC)", "map": "COCO mAP", "miou": "mIoU",
    "pixel_accuracy": "pixel acc.", "delta1": "δ < 1.25", "abs_rel": "AbsRel", "rmse": "RMSE",
    "within_11_25": "< 11.25°", "within_22_5": "< 22.5°", "within_30": "< 30°",
    "mean_angle": "mean angle",
}
INIT_LABELS = {
    "scratch": "From scratch", "supervised": "Supervised (classification)",
    "simclr": "Self-supervised (SimCLR)", "supervised_multitask": "Supervised multi-task",
    "must": "MuST (multi-task pseudo labels)",
    # `must demo --preset study` rows (Tables 3, 4, 5)
    "must_cls": "MuST: classification pseudo labels", "must_cls_depth": "MuST: + depth",
    "must_cls_depth_seg": "MuST: + depth + segmentation",
    "supervised_multitask_pseudo": "Supervised multi-task + pseudo labels",
    "teacher_classification": "Classification teacher", "teacher_detection": "Detection teacher",
    "teacher_segmentation": "Segmentation teacher", "teacher_depth": "Depth teacher",
    # `must pretrain` rows (Table 2's self-supervised baseline; Doersch & Zisserman 2017)
    "pirl": "Self-supervised (PIRL)", "rotation": "Self-supervised (rotation)",
    "jigsaw": "Self-supervised (jigsaw)", "relative_position": "Self-supervised (relative position)",
    "colorization": "Self-supervised (colorization)", "exemplar": "Self-supervised (exemplar)",
    "multi": "Self-supervised multi-task (Doersch & Zisserman)",
    "doersch": "Self-supervised multi-task (Doersch & Zisserman)",
}


@dataclass
class Cell:
    text: str
    bold: bool = False
    delta: str | None = None
    """The difference to the baseline, e.g. ``"+2.1"``, shown in parentheses."""


@dataclass
class Table:
    key: str
    """Anchor / file-name stem, e.g. ``"transfer"``."""
    title: str
    caption: str
    header: list[tuple[str, str]]
    """(name, sub-title) per column; the first column holds the row labels."""
    rows: list[list[Cell]] = field(default_factory=list)
    text_columns: int = 1
    """Leading columns holding names (left-aligned); the rest hold numbers (right-aligned)."""


def metric_label(metric: str) -> str:
    return METRIC_LABELS.get(metric, metric)


def init_label(init: str) -> str:
    return INIT_LABELS.get(init, init)


def is_percent(values: list[float], lower_is_better: bool = False) -> bool:
    """Fractions (every value in [0, 1]) of a higher-is-better metric print as percentages."""
    return bool(values) and not lower_is_better and all(0.0 <= value <= 1.0 for value in values)


def format_value(value: float, percent: bool) -> str:
    shown = value * 100 if percent else value
    return f"{shown:.1f}" if percent or abs(shown) >= 10 else f"{shown:.3f}"


def format_delta(delta: float, percent: bool) -> str:
    """Signed, as in the paper's ``(+2.1)``; a difference that rounds to zero reads ``+0.0``."""
    shown = delta * 100 if percent else delta
    digits = 1 if percent or abs(shown) >= 10 else 3
    text = f"{shown:+.{digits}f}"
    return "+" + text[1:] if float(text) == 0 else text


def best_values(values: list[float], lower: bool) -> set[float]:
    return {min(values) if lower else max(values)} if values else set()


def transfer_table(table: Mapping[str, Mapping[str, Mapping[str, Any]]], key: str = "transfer",
                   title: str = "Transfer learning", caption: str = "",
                   rows_shown: list[str] | None = None) -> Table | None:
    """Rows = pre-trainings (``init``; ``rows_shown`` in that order, default all), columns =
    downstream tasks; ``value (+delta)`` cells; a last "Mean" column when the tasks are several and
    all higher-is-better fractions (:func:`~must.report.results.row_means`)."""
    if not table:
        return None
    tasks = order_tasks({task for row in table.values() for task in row})
    inits = [init for init in rows_shown if init in table] if rows_shown is not None else order_inits(table)
    if not inits:
        return None
    columns = []
    for task in tasks:
        entries = [table[init][task] for init in inits if task in table[init]]
        lower = bool(entries[0].get("lower_is_better"))
        values = [entry["value"] for entry in entries]
        columns.append((entries[0]["metric"], lower, is_percent(values, lower), best_values(values, lower)))
    header = [("Pre-training", "")] + [
        (task, metric_label(metric) + (" %" if percent else "") + (" (lower is better)" if lower else ""))
        for task, (metric, lower, percent, _) in zip(tasks, columns)]
    rows = []
    for init in inits:
        cells = [Cell(init_label(init))]
        for task, (_, _, percent, best) in zip(tasks, columns):
            entry = table[init].get(task)
            if entry is None:
                cells.append(Cell("—"))
                continue
            delta = entry.get("delta_vs_supervised")
            cells.append(Cell(format_value(entry["value"], percent), entry["value"] in best,
                              None if delta is None else format_delta(delta, percent)))
        rows.append(cells)
    means = row_means(table) if len(tasks) > 1 else {}
    if means and all(percent for _, _, percent, _ in columns):  # a mean of percentages only
        header.append(("Mean", "of the columns"))
        shown = [means.get(init) for init in inits]
        best = best_values([m for m in shown if m is not None], False)
        reference = means.get(BASELINE)
        for cells, init, mean in zip(rows, inits, shown):
            delta = None if mean is None or reference is None or init == BASELINE else mean - reference
            cells.append(Cell("—") if mean is None else Cell(
                format_value(mean, True), mean in best, None if delta is None else format_delta(delta, True)))
    return Table(key, title, caption, header, rows)


def teacher_student_table(entries: Mapping[str, Mapping[str, Any]], delta_m: float | None = None) -> Table | None:
    """MuST Table 4 ("Performance" columns): teacher and student on the teacher's own task, then
    Delta_m% over the tasks (``results.delta_m_percent``) when given."""
    if not entries:
        return None
    header = [("Task", ""), ("Metric", ""), ("Teacher", "single task"), ("Student", "multi-task"),
              ("Student − teacher", "")]
    rows = []
    for task in order_tasks(entries):
        entry = entries[task]
        lower = bool(entry.get("lower_is_better"))
        numbers = [v for v in (entry["teacher"], entry["student"]) if v is not None]
        percent = is_percent(numbers, lower)
        best = best_values(numbers, lower) if len(numbers) == 2 else set()
        teacher, student = entry["teacher"], entry["student"]
        rows.append([
            Cell(task), Cell(metric_label(entry["metric"]) + (" %" if percent else "")),
            Cell(format_value(teacher, percent), teacher in best),
            Cell("—") if student is None else Cell(format_value(student, percent), student in best),
            Cell("—" if student is None else format_delta(entry["delta"], percent)),
        ])
    if delta_m is not None:
        rows.append([Cell("all tasks"), Cell("Δm %"), Cell("—"), Cell("—"), Cell(f"{delta_m:+.1f}")])
    caption = ("Each specialized teacher's validation metric on its own task next to the student's "
               "on the same task: the student learned it from that teacher's pseudo labels (MuST sec. "
               "3.2). Mirrors the 'Performance' columns of the paper's Table 4; bold = better. "
               "Δm %: the mean relative change against the teachers, signed so that + is better "
               "(Maninis et al. 2019).")
    return Table("teacher_vs_student", "Teacher vs. student (paper Table 4)", caption, header, rows, 2)


def selection_table(results: Mapping[str, Any]) -> Table | None:
    """The grid cell each pre-training's result comes from (MuST sec. 3.5: best on validation)."""
    rows = []
    for section, mode in (("transfer", "fine-tune"), ("linear_probe", "linear probe")):
        table = results.get(section) or {}
        for init in order_inits(table):
            for task in order_tasks(table[init]):
                entry = table[init][task]
                rows.append([Cell(init), Cell(task), Cell(mode), Cell(_number(entry.get("lr"), "{:g}")),
                             Cell(_number(entry.get("steps"), "{:d}")),
                             Cell(_number(entry.get("val_value"), "{:.4f}")),
                             Cell(f"{entry['value']:.4f}"), Cell(str(entry.get("grid_cells", "—")))])
    if not rows:
        return None
    header = [("Pre-training", ""), ("Task", ""), ("Mode", ""), ("Learning rate", ""), ("Steps", ""),
              ("Validation", "chooses"), ("Test", "reported"), ("Grid cells", "")]
    caption = ("The learning rate and number of steps the grid search picked for each pre-training "
               "and task by validation score; the tables above report the test score of that cell.")
    return Table("grid", "Grid search choices", caption, header, rows, 3)


def timings_table(timings: Mapping[str, float]) -> Table | None:
    if not timings:
        return None
    rows = [[Cell(stage), Cell(format_duration(seconds))] for stage, seconds in timings.items()]
    rows.append([Cell("total", bold=True), Cell(format_duration(sum(timings.values())), bold=True)])
    return Table("timings", "Time per stage", "Wall-clock time of each pipeline stage of this run.",
                 [("Stage", ""), ("Time", "")], rows)


def format_duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    if round(seconds) < 3600:
        minutes, rest = divmod(int(round(seconds)), 60)
        return f"{minutes} min {rest:02d} s"
    hours, minutes = divmod(int(round(seconds / 60)), 60)
    return f"{hours} h {minutes:02d} min"


def _number(value: Any, pattern: str) -> str:
    return "—" if value is None else pattern.format(value)


def baseline_note(table: Mapping[str, Any]) -> str:
    return (f"In parentheses: the difference to the '{BASELINE}' row." if BASELINE in table
            else f"No '{BASELINE}' row, so no differences are shown.")


def to_markdown(table: Table, level: int = 2) -> str:
    """A GitHub-flavoured Markdown table under a heading of ``level`` (0: none), the caption below."""
    def cell(value: Cell) -> str:
        text = value.text.replace("|", "\\|")
        text = f"**{text}**" if value.bold else text
        return text + (f" ({value.delta})" if value.delta is not None else "")

    header = [f"{name} ({sub})" if sub else name for name, sub in table.header]
    lines = [f"{'#' * level} {table.title}", ""] if level else []
    lines += ["| " + " | ".join(header) + " |",
             "|" + "|".join([" --- "] * table.text_columns
                            + [" ---: "] * (len(header) - table.text_columns)) + "|"]
    lines += ["| " + " | ".join(cell(value) for value in row) + " |" for row in table.rows]
    return "\n".join(lines + ["", table.caption, ""])


def to_text(table: Table) -> str:
    """Aligned plain-text columns for a terminal (no emphasis), the caption below when there is one."""
    header = [f"{name} ({sub})" if sub else name for name, sub in table.header]
    rows = [[value.text + (f" ({value.delta})" if value.delta is not None else "") for value in row]
            for row in table.rows]
    widths = [max(len(line[column]) for line in [header, *rows]) for column in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(cell.ljust(width) if column < table.text_columns else cell.rjust(width)
                         for column, (cell, width) in enumerate(zip(cells, widths))).rstrip()

    lines = [line(header), "-" * len(line(header)), *map(line, rows)]
    return "\n".join(lines + ([table.caption] if table.caption else []))


def to_html(table: Table) -> str:
    """A ``<table>`` inside a ``<figure>`` with its caption; numbers right-aligned by CSS."""
    def cell(value: Cell, tag: str) -> str:
        text = html.escape(value.text)
        text = f"<strong>{text}</strong>" if value.bold else text
        if value.delta is not None:
            amount = float(value.delta)
            sign = "up" if amount > 0 else "down" if amount < 0 else "flat"
            text += f' <span class="delta {sign}">({html.escape(value.delta)})</span>'
        return f"<{tag}>{text}</{tag.split()[0]}>"

    head = "".join(f"<th>{html.escape(name)}" + (f"<br><small>{html.escape(sub)}</small>" if sub else "")
                   + "</th>" for name, sub in table.header)
    def row_html(row: list[Cell]) -> str:
        names = "".join(cell(value, "th" if index == 0 else 'td class="name"')
                        for index, value in enumerate(row[:table.text_columns]))
        return "<tr>" + names + "".join(cell(v, "td") for v in row[table.text_columns:]) + "</tr>"

    body = "\n".join(row_html(row) for row in table.rows)
    return (f'<figure class="table" id="{table.key}"><table>\n<thead><tr>{head}</tr></thead>\n'
            f"<tbody>\n{body}\n</tbody></table>\n"
            f"<figcaption>{html.escape(table.caption)}</figcaption></figure>")


def student_variants_table(variants: Mapping[str, Mapping[str, Any]],
                           entries: Mapping[str, Mapping[str, Any]]) -> Table | None:
    """The main student beside every comparison variant (``results.students``: other labels, other
    loss weightings) on each teacher's metric, and Delta_m% against the teachers."""
    if not variants:
        return None
    tasks = order_tasks(entries)
    header = [("Student", ""), *((task, metric_label(entries[task]["metric"])) for task in tasks), ("Δm %", "")]
    rows = []
    for name, variant in variants.items():
        values = [variant["metrics"].get(task) for task in tasks]
        rows.append([Cell(name), *(Cell("—") if v is None else Cell(format_value(v, False)) for v in values),
                     Cell("—" if variant["delta_m"] is None else f"{variant['delta_m']:+.1f}")])
    caption = ("Every student of the run on the teachers' validation sets (the metric of the teacher vs. "
               "student table): the main one and the comparison variants (a subset of the tasks, the "
               "teachers' own labels, another loss weighting). Δm %: mean relative change against the "
               "teachers, + is better (Maninis et al. 2019).")
    return Table("student_variants", "Students compared", caption, header, rows, 1)
