"""``must report``: one run directory in, ``report/{index.html, report.md, results.json, *.png}`` out.

Collects the numbers (:mod:`.results`), lays them out as the paper's tables (:mod:`.tables`),
draws the training curves (:mod:`.plots`) and Figure 4 (:mod:`.figure`), and writes the page
(:mod:`.html`). Whatever the run does not have yet (no transfer, no student) is left out with a
note; nothing here raises for a half-finished run.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from must.errors import MustError
from must.files import CHECKPOINT_NAME, write_atomic
from must.report import figure as figure_lib
from must.report.html import Picture, Section, page_html, page_markdown
from must.report.plots import plot_lassos, plot_run_curves
from must.report.results import collect_results, order_tasks, write_results
from must.report.student import (STUDENT_RECORD, LoadedModel, load_student,
                                 load_transfer_model)
from must.report.tables import (baseline_note, selection_table, student_variants_table, teacher_student_table,
                                timings_table, transfer_table)
from must.transfer.grid import best_cell_directory

LOAD_ERRORS = (FileNotFoundError, MustError)
"""What a half-written or foreign run directory makes the loaders raise (anything else is a bug)."""
TRANSFER_CAPTION = (
    "Each row is one pre-trained checkpoint, each column a downstream task it was fine-tuned on end "
    "to end (MuST sec. 3.5: backbone + FPN from the checkpoint, new heads, cosine schedule, grid "
    "search over learning rate x steps, the best cell chosen on validation). Test-split scores, "
    "higher is better; bold = best of each column. Mirrors the paper's Tables 2 and 5; rows "
    "'must_<tasks>' are MuST with fewer pseudo-label tasks (Table 3).")
STUDY_TABLES = (
    ("table3", "Adding pseudo-label tasks (paper Table 3)",
     "MuST trained on the pool's pseudo labels of more and more tasks, the mean over the downstream "
     "tasks in the last column.", ["supervised", "must_cls", "must_cls_depth", "must_cls_depth_seg", "must"]),
    ("table4", "Teachers vs. student as pre-training (paper Table 4)",
     "Each specialized teacher's checkpoint fine-tuned on every downstream task, next to the student "
     "that learned from all of them.",
     ["supervised", "teacher_classification", "teacher_detection", "teacher_segmentation",
      "teacher_depth", "must"]),
    ("table5", "Supervised multi-task vs. pseudo labels (paper Table 5)",
     "One network trained on each labeled set's own labels, then with every set completed by the "
     "other teachers' pseudo labels, then MuST on the unlabeled pool.",
     ["supervised", "supervised_multitask", "supervised_multitask_pseudo", "must"]),
)
"""The study's row subsets of the transfer table (``must demo --preset study``): shown when a run
has at least two of a table's rows besides ``supervised``."""
LINEAR_CAPTION = (
    "As above, but the pre-trained backbone is frozen and only the new head is trained: a linear "
    "probe of the features (Doersch & Zisserman 2017).")
KNN_CAPTION = (
    "Nothing trained: each test image takes the class of its 20 nearest training images by cosine "
    "similarity of the frozen trunk's pooled features, votes weighted by exp(similarity / 0.07) (Wu et "
    "al. 2018; Caron et al. 2021).")


@dataclass
class Report:
    out_dir: Path
    results: dict[str, Any]
    html: Path
    markdown: Path
    results_json: Path
    figure: figure_lib.FigureResult | None = None
    notes: list[str] = field(default_factory=list)


def transfer_sections(results: Mapping[str, Any]) -> list[Section]:
    sections = []
    for key, title, caption in (("transfer", "Transfer learning (paper Tables 2, 3, 5)", TRANSFER_CAPTION),
                                ("linear_probe", "Linear probe", LINEAR_CAPTION),
                                ("knn", "k-NN on frozen features", KNN_CAPTION)):
        table_data = results.get(key) or {}
        table = transfer_table(table_data, key, title, f"{caption} {baseline_note(table_data)}")
        if table is not None:
            sections.append(Section(title, key + "_section", tables=[table]))
    finetune = results.get("transfer") or {}
    for key, title, caption, rows in STUDY_TABLES:
        if sum(row in finetune for row in rows if row != "supervised") >= 2:
            table = transfer_table(finetune, key, title, f"{caption} {baseline_note(finetune)}", rows)
            sections.append(Section(title, key + "_section", tables=[table]))
    return sections


def load_normals_model(run_dir: Path, student: LoadedModel, device: torch.device | str,
                       notes: list[str]) -> LoadedModel | None:
    """The MuST checkpoint fine-tuned on normals, for Figure 4's last column, if the run has it."""
    directory = run_dir / "transfer" / "must" / "normals"
    if not (directory / CHECKPOINT_NAME).exists():  # `must transfer` keeps it in the chosen cell
        directory = best_cell_directory(directory) or directory
    if not (directory / CHECKPOINT_NAME).exists():
        notes.append(f"no {directory.relative_to(run_dir) / CHECKPOINT_NAME}: Figure 4 has no normals column "
                     "(the student has no normals head; normals are never a pre-training task)")
        return None
    try:
        return load_transfer_model(directory, "normals", device)
    except LOAD_ERRORS as error:
        notes.append(f"normals model not drawn: {error}")
        return None


def figure_section(run_dir: Path, out_dir: Path, device: torch.device | str, count: int,
                   sources: dict[str, Path] | None, panel: int,
                   notes: list[str]) -> tuple[Section | None, figure_lib.FigureResult | None]:
    """Paper Figure 4 from the student's checkpoint; ``None`` with a note when it cannot be drawn."""
    student_dir = run_dir / "student"
    if not (student_dir / CHECKPOINT_NAME).exists() or not (student_dir / STUDENT_RECORD).exists():
        notes.append("no student/checkpoint.pt + student/student.json: Figure 4 left out")
        return None, None
    try:
        student = load_student(student_dir, device)
        images, image_notes = figure_lib.find_figure_images(run_dir, count, student.image_size, sources)
    except LOAD_ERRORS as error:
        notes.append(f"Figure 4 left out: {error}")
        return None, None
    notes += image_notes
    if not images:
        notes.append("Figure 4 left out: no images found")
        return None, None
    normals = load_normals_model(run_dir, student, device, notes)
    result = figure_lib.figure4(student, images, out_dir / "figure4.png", device, normals, panel)
    notes += result.notes
    sources_text = ", ".join(dict.fromkeys(image.source for image in images))
    caption = (
        f"Predictions of one student on images of {sources_text} ('pool': the shared image set the "
        "teachers labeled; 'transfer': the shifted downstream domain). Class with its probability, "
        "boxes with their scores, the segmentation overlay (class colours blended over the image) and "
        "the depth map (red near, blue far) all come from a single forward pass of the student"
        + ("; the normals* column (x, y, z as RGB) comes from the MuST checkpoint fine-tuned on "
           "normals, since normals are never a pre-training task" if normals is not None else "")
        + ". Mirrors the paper's Figure 4.")
    picture = Picture(result.path.name, "Figure 4: one student, every task", caption)
    return Section("Student predictions (paper Figure 4)", "figure4", pictures=[picture]), result


def curves_section(run_dir: Path, out_dir: Path, notes: list[str]) -> Section | None:
    plots = plot_run_curves(run_dir, out_dir)
    if not plots:
        notes.append("no metrics.jsonl of teachers or student: training curves left out")
        return None
    pictures = [Picture(plot.path.name, plot.name.capitalize(),
                        "Left: training losses (the total and, with several tasks, each task's); "
                        "right: validation metrics over steps (each task's primary metric, higher "
                        "is better).")
                for plot in plots]
    return Section("Training curves", "curves", pictures=pictures)


def lasso_section(results: Mapping[str, Any], out_dir: Path) -> Section | None:
    """Each lasso pre-training's learned weights (``results["lasso"]``) as a heat map."""
    plots = plot_lassos(results.get("lasso") or {}, out_dir)
    if not plots:
        return None
    pictures = [Picture(plot.path.name, f"Lasso of '{plot.name}'",
                        "Each task's learned weights (Doersch & Zisserman 2017 sec. 4.2, their Figure 3): "
                        "heads that read C5 mix the trunk's stages C2..C5, pixel heads the pyramid levels "
                        "P2..P7 that fused P2 sums. Colour: |weight| relative to the row's largest; the "
                        "L1 penalty drives the weights of unused levels to 0.")
                for plot in plots]
    return Section("Lasso layer selection (Doersch & Zisserman Figure 3)", "lasso", pictures=pictures)


def lead_text(results: Mapping[str, Any]) -> str:
    teachers = order_tasks(results.get("teachers", {}))
    student = order_tasks(results.get("student", {}))
    transfer = results.get("transfer", {})
    tasks = order_tasks({task for row in transfer.values() for task in row})
    return (f"Multi-Task Self-Training (Ghiasi et al., ICCV 2021). "
            f"Teachers: {', '.join(teachers) or 'none'}. "
            f"Student tasks: {', '.join(student) or 'none'}. Transfer: {len(transfer)} pre-trainings "
            f"on {len(tasks)} downstream tasks. All numbers are in results.json.")


def write_report(run_dir: str | Path, out_dir: str | Path | None = None, device: torch.device | str = "cpu",
                 figure_images: int = 3, image_sources: dict[str, Path] | None = None,
                 panel: int = 192) -> Report:
    """Writes ``index.html``, ``report.md``, ``results.json`` and the PNGs to ``out_dir``
    (default ``<run_dir>/report``)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir}: no such run directory")
    out_dir = Path(out_dir) if out_dir is not None else run_dir / "report"
    results = collect_results(run_dir)
    notes = list(results["notes"])
    sections = transfer_sections(results)
    tables = [teacher_student_table(results["teacher_vs_student"], results.get("delta_m")),
              student_variants_table(results.get("students", {}), results["teacher_vs_student"])]
    sections += [Section(t.title, t.key + "_section", tables=[t]) for t in tables if t is not None]
    figure_part, figure_result = figure_section(run_dir, out_dir, device, figure_images, image_sources,
                                                panel, notes)
    curves = curves_section(run_dir, out_dir, notes)
    lasso = lasso_section(results, out_dir)
    sections += [s for s in (figure_part, curves, lasso) if s is not None]
    for table in (selection_table(results), timings_table(results["timings"])):
        if table is not None:
            sections.append(Section(table.title, table.key + "_section", tables=[table]))
    results["notes"] = notes
    if notes:
        sections.insert(0, Section("Notes: left out or substituted", "notes", notes=notes))
    footer = (f"Written by must report on {datetime.datetime.now():%Y-%m-%d %H:%M} from {run_dir}. "
              "Higher is better for every number unless marked.")
    title, run, lead = "MuST report", str(results["run"]), lead_text(results)
    json_path = write_results(results, out_dir / "results.json")
    markdown = write_atomic(out_dir / "report.md", page_markdown(title, run, lead, sections, footer))
    page = write_atomic(out_dir / "index.html", page_html(title, run, lead, sections, footer))
    return Report(out_dir, results, page, markdown, json_path, figure_result, notes)
