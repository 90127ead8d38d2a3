"""Linear-probe scores beside fine-tuning (SPEC D5, Doersch & Zisserman 2017 sec. 4), from the
files ``must transfer`` really writes: ``transfer/<init>/<task>/best_linear.json`` next to
``best.json``, both modes' cells in one ``grid.jsonl``. The numbers land in ``results.json``'s
``linear_probe`` block and in a second table of the HTML and Markdown pages; a run without probes
shows neither."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from must.report import collect_results, write_report

FINETUNE = {"supervised": {"classification": 0.60, "depth": 0.70},
            "simclr": {"classification": 0.64, "depth": 0.66},
            "multi": {"classification": 0.58}}
LINEAR = {"supervised": {"classification": 0.40, "depth": 0.50},
          "simclr": {"classification": 0.47},
          "multi": {"classification": 0.35, "depth": 0.52}}
METRICS = {"classification": "top1", "depth": "delta1"}


def line(init: str, task: str, value: float, mode: str, lr: float) -> dict[str, Any]:
    """A grid line as ``must transfer`` writes it (``RECORD_FIELDS`` of :mod:`must.transfer.grid`)."""
    return {"init": init, "task": task, "metric": METRICS[task], "lr": lr, "steps": 100, "mode": mode,
            "val_value": value + 0.02, "value": value, "seconds": 1.0}


def write_run(run: Path, finetune: dict[str, dict[str, float]], linear: dict[str, dict[str, float]],
              mode_in_linear_file: bool = True) -> None:
    """Per init and task: two fine-tuning and three probe cells in grid.jsonl, each mode's best."""
    for init in set(finetune) | set(linear):
        for task in set(finetune.get(init, {})) | set(linear.get(init, {})):
            folder = run / "transfer" / init / task
            folder.mkdir(parents=True)
            grid = []
            if task in finetune.get(init, {}):
                value = finetune[init][task]
                grid += [line(init, task, value - 0.1, "finetune", 0.01), line(init, task, value, "finetune", 0.1)]
                (folder / "best.json").write_text(json.dumps(grid[-1]))
            if task in linear.get(init, {}):
                value = linear[init][task]
                cells = [line(init, task, value - 0.05 * i, "linear", 0.1 * 2**i) for i in range(3)]
                grid += cells
                best = dict(cells[0])
                if not mode_in_linear_file:
                    del best["mode"]
                (folder / "best_linear.json").write_text(json.dumps(best))
            (folder / "grid.jsonl").write_text("".join(json.dumps(cell) + "\n" for cell in grid))


def values(table: dict[str, dict[str, dict[str, Any]]]) -> dict[str, dict[str, float]]:
    return {init: {task: entry["value"] for task, entry in row.items()} for init, row in table.items()}


@pytest.mark.parametrize("mode_in_linear_file", [True, False])
def test_results_hold_the_probe_beside_finetuning(tmp_path: Path, mode_in_linear_file: bool) -> None:
    write_run(tmp_path, FINETUNE, LINEAR, mode_in_linear_file)
    results = collect_results(tmp_path)
    assert values(results["transfer"]) == FINETUNE  # no probe number leaks into fine-tuning
    assert values(results["linear_probe"]) == LINEAR
    entry = results["linear_probe"]["simclr"]["classification"]
    assert entry["metric"] == "top1" and entry["lr"] == 0.1 and entry["steps"] == 100
    assert entry["val_value"] == pytest.approx(0.49)
    assert entry["grid_cells"] == 3  # the probe's cells only; the two fine-tuning cells are not counted
    assert results["transfer"]["simclr"]["classification"]["grid_cells"] == 2
    # differences to the supervised row, within each mode
    assert entry["delta_vs_supervised"] == pytest.approx(0.07)
    assert results["linear_probe"]["multi"]["depth"]["delta_vs_supervised"] == pytest.approx(0.02)
    assert results["transfer"]["simclr"]["depth"]["delta_vs_supervised"] == pytest.approx(-0.04)
    assert "delta_vs_supervised" not in results["linear_probe"]["supervised"]["classification"]


def test_pages_show_a_second_table(tmp_path: Path) -> None:
    run = tmp_path / "run"
    write_run(run, FINETUNE, LINEAR)
    report = write_report(run, tmp_path / "report", figure_images=0)
    saved = json.loads(report.results_json.read_text())
    assert values(saved["linear_probe"]) == LINEAR
    markdown = report.markdown.read_text()
    finetune_at, linear_at = markdown.index("## Transfer learning"), markdown.index("## Linear probe")
    assert finetune_at < linear_at
    probe = markdown[linear_at:].split("\n## ")[0]
    assert "| Pre-training | classification (top-1 %) | depth (δ < 1.25 %) |" in probe
    assert "| Self-supervised (SimCLR) | **47.0** (+7.0) | — |" in probe
    assert "| Self-supervised multi-task (Doersch & Zisserman) | 35.0 (-5.0) | **52.0** (+2.0) |" in probe
    assert "| Self-supervised (SimCLR) | **64.0** (+4.0) | 66.0 (-4.0) |" in markdown[finetune_at:linear_at]
    page = report.html.read_text()
    assert page.index('id="transfer"') < page.index('id="linear_probe"')
    assert "<strong>47.0</strong>" in page
    grid = markdown[markdown.index("## Grid search choices"):].split("\n## ")[0]
    assert "| simclr | classification | linear probe | 0.1 | 100 | 0.4900 | 0.4700 | 3 |" in grid


def test_probe_only_and_finetune_only_runs(tmp_path: Path) -> None:
    write_run(tmp_path / "finetune", FINETUNE, {})
    results = collect_results(tmp_path / "finetune")
    assert "linear_probe" not in results and values(results["transfer"]) == FINETUNE
    report = write_report(tmp_path / "finetune", tmp_path / "finetune_report", figure_images=0)
    assert "Linear probe" not in report.markdown.read_text()
    assert 'id="linear_probe"' not in report.html.read_text()

    write_run(tmp_path / "probe", {}, LINEAR)
    results = collect_results(tmp_path / "probe")
    assert results["transfer"] == {} and values(results["linear_probe"]) == LINEAR
    assert any("no transfer results" in note for note in results["notes"])
    report = write_report(tmp_path / "probe", tmp_path / "probe_report", figure_images=0)
    assert "## Linear probe" in report.markdown.read_text()
