"""Training curves of the teachers and the student (matplotlib, one PNG per run), and the lasso
heat maps of the self-supervised pre-trainings that learned one.

Each curve picture has two panels over training steps: the losses logged in ``metrics.jsonl`` (the
total and, for the student, each task's share: MuST sec. 3.3's weighted sum L = sum_i w_i L_i)
and the validation metrics (each task's primary metric, higher is better). A lasso heat map is
tasks x levels (Doersch & Zisserman 2017, Figure 3's analogue): each task's learned weight on
C2..C5 (heads that read C5) or on P2..P7 (pixel heads, the levels of fused P2).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from must.report.results import is_number, primary_metric, read_jsonl


@dataclass
class LassoPlot:
    name: str
    """The pre-training's directory name under ``pretrain/`` (its method)."""
    path: Path
    table: dict[str, Any]
    """``{"tasks", "units", "alpha"}``: ``alpha[task][unit]``, None where a task has no weight."""


@dataclass
class CurvePlot:
    name: str
    """``"student"`` or ``"teacher <task>"``."""
    path: Path


def series(records: Iterable[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    """(steps, values) of one key over the records that have it."""
    steps, values = [], []
    for record in records:
        if is_number(record.get(key)) and is_number(record.get("step")):
            steps.append(int(record["step"]))
            values.append(float(record[key]))
    return steps, values


def loss_keys(records: list[dict[str, Any]]) -> list[str]:
    """``loss`` and the per-task ``loss/<task>`` keys (not the parts ``loss/<task>/<part>``); a
    single task's loss is left out next to the total it equals (a teacher)."""
    per_task = sorted({key for record in records for key in record
                       if key.startswith("loss/") and key.count("/") == 1})
    total = ["loss"] if any("loss" in record for record in records) else []
    return total + per_task if len(per_task) > 1 or not total else total


def eval_keys(records: list[dict[str, Any]]) -> list[str]:
    """Per task the primary ``eval/<task>/<metric>`` key; every metric of a task without one."""
    keys = sorted({key for record in records for key in record
                   if key.startswith("eval/") and key.count("/") == 2})
    chosen = []
    for task in dict.fromkeys(key.split("/")[1] for key in keys):
        own = [key for key in keys if key.split("/")[1] == task]
        primary = f"eval/{task}/{primary_metric(task)}"
        chosen += [primary] if primary in own else own
    return chosen


def save_figure(figure: Any, out_png: Path) -> Path:
    """Writes a finished matplotlib ``figure`` to ``out_png`` (its folder made) and closes it: an
    open figure keeps its memory until closed, and a report draws many."""
    import matplotlib.pyplot as plt

    figure.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out_png)
    plt.close(figure)
    return out_png


def plot_curves(metrics_jsonl: Path, out_png: Path, title: str) -> Path | None:
    """Loss and validation curves of one run; ``None`` (nothing written) without any records."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FormatStrFormatter, MaxNLocator

    records = read_jsonl(metrics_jsonl)
    losses, evaluations = loss_keys(records), eval_keys(records)
    if not losses and not evaluations:
        return None
    figure, (loss_axis, eval_axis) = plt.subplots(1, 2, figsize=(10, 3.4), dpi=100)
    for key in losses:
        steps, values = series(records, key)
        loss_axis.plot(steps, values, label=key, linewidth=1.6 if key == "loss" else 1.0)
    values = [v for key in losses for v in series(records, key)[1]]
    if values and min(values) > 0 and max(values) > 10 * min(values):
        loss_axis.set_yscale("log")  # losses of different tasks differ by orders of magnitude
        loss_axis.yaxis.set_major_formatter(FormatStrFormatter("%g"))
        loss_axis.yaxis.set_minor_formatter(FormatStrFormatter("%g"))
    for key in evaluations:
        steps, values = series(records, key)
        eval_axis.plot(steps, values, marker="o", markersize=3, label=key.removeprefix("eval/"))
    for axis, name, keys in ((loss_axis, "training loss", losses), (eval_axis, "validation", evaluations)):
        axis.set_title(name, fontsize=10)
        axis.set_xlabel("step")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.grid(alpha=0.3)
        if keys:
            axis.legend(fontsize=7, loc="best")
        else:
            axis.text(0.5, 0.5, "nothing logged", ha="center", va="center", transform=axis.transAxes)
    figure.suptitle(title, fontsize=11)
    return save_figure(figure, out_png)


def plot_run_curves(run_dir: Path, out_dir: Path) -> list[CurvePlot]:
    """One picture per teacher (``teachers/<task>/metrics.jsonl``) and one for the student."""
    plots = []
    sources = [(f"teacher {path.parent.name}", path, f"curves_teacher_{path.parent.name}.png")
               for path in sorted((run_dir / "teachers").glob("*/metrics.jsonl"))]
    sources.append(("student", run_dir / "student" / "metrics.jsonl", "curves_student.png"))
    for name, metrics, file_name in sources:
        path = plot_curves(metrics, out_dir / file_name, name) if metrics.exists() else None
        if path is not None:
            plots.append(CurvePlot(name, path))
    return plots


def plot_lasso(table: dict[str, Any], out_png: Path, title: str) -> Path:
    """A tasks x levels heat map of a learned lasso: colour = |weight| / the row's largest (which
    levels each task selects), the value written in each cell, grey where a task has no weight."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    values = np.array([[np.nan if v is None else float(v) for v in row] for row in table["alpha"]], dtype=float)
    magnitude = np.abs(values)
    row_max = np.nanmax(np.where(np.isnan(magnitude), -np.inf, magnitude), axis=1, keepdims=True)
    shade = np.ma.masked_invalid(magnitude / np.where(row_max > 0, row_max, 1.0))
    figure, axis = plt.subplots(figsize=(1.0 + 0.7 * len(table["units"]), 1.2 + 0.5 * len(table["tasks"])),
                                dpi=100)
    colours = matplotlib.colormaps["Blues"].with_extremes(bad="#d9d9d9")  # grey: no such weight
    axis.imshow(shade, cmap=colours, vmin=0.0, vmax=1.0, aspect="auto")
    for (row, column), value in np.ndenumerate(values):
        if not np.isnan(value):
            axis.text(column, row, f"{value:.2f}", ha="center", va="center", fontsize=7,
                      color="white" if shade[row, column] > 0.6 else "black")
    axis.set_xticks(range(len(table["units"])), [unit.upper() for unit in table["units"]])
    axis.set_yticks(range(len(table["tasks"])), table["tasks"])
    axis.set_title(title, fontsize=10)
    return save_figure(figure, out_png)


def plot_lassos(tables: Mapping[str, dict[str, Any]], out_dir: Path) -> list[LassoPlot]:
    """One heat map per pre-training of ``tables`` (``results.lasso``: method -> table), as
    ``lasso_<method>.png``."""
    return [LassoPlot(name, plot_lasso(table, out_dir / f"lasso_{name}.png", f"lasso of pre-training '{name}'"),
                      table)
            for name, table in tables.items()]
