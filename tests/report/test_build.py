"""write_report end to end: results.json, Markdown, Figure 4, and the page in a real browser."""

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from must.report import collect_results, write_report

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
IMAGE_CHECK = """<script>
window.addEventListener("load", () => {
  const images = Array.from(document.images);
  const loaded = images.filter((image) => image.complete && image.naturalWidth > 0).length;
  document.body.setAttribute("data-images", `${loaded}/${images.length}`);
});
</script>
"""


@pytest.fixture(scope="module")
def report(run_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    return write_report(run_dir, tmp_path_factory.mktemp("report"), figure_images=2, panel=96)


def test_results_json_holds_every_number(report: Any, expected: Any) -> None:
    results = json.loads(report.results_json.read_text())
    table = {init: {task: e["value"] for task, e in row.items()} for init, row in results["transfer"].items()}
    assert table == expected.transfer
    assert results["transfer"]["must"]["segmentation"]["delta_vs_supervised"] == pytest.approx(0.10)
    assert results["teacher_vs_student"]["classification"] == {
        "metric": "top1", "teacher": 0.8, "student": 0.75, "delta": pytest.approx(-0.05)}
    assert results["timings"] == expected.timings
    assert results["linear_probe"]["must"]["classification"]["value"] == 0.55
    assert results["notes"] == []


def test_markdown_shows_the_paper_tables(report: Any) -> None:
    text = report.markdown.read_text()
    assert "| MuST (multi-task pseudo labels) | **71.3** (+11.3) | **50.0** (+5.0) | **45.0** (+10.0) | " \
           "68.0 (-2.0) | **31.0** (+6.0) |" in text
    assert "| classification | top-1 % | **80.0** | 75.0 | -5.0 |" in text
    for picture in ("figure4.png", "curves_student.png", "curves_teacher_detection.png"):
        assert f"]({picture})" in text and (report.out_dir / picture).exists()


def test_figure4_size(report: Any) -> None:
    # 2 pool + 2 transfer rows; class, boxes, segmentation, depth + the transferred normals
    assert Image.open(report.out_dir / "figure4.png").size == (120 + 5 * 100 + 4, 28 + 4 * 100 + 4)


def run_chromium(page: Path, profile: Path, *arguments: str) -> subprocess.CompletedProcess:
    command = [str(CHROMIUM), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *arguments, page.as_uri()]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.skipif(not CHROMIUM.exists(), reason="no /usr/bin/chromium (Debian package 'chromium')")
def test_page_in_a_real_browser(report: Any, tmp_path: Path) -> None:
    # the check script goes into a copy next to the original, so relative image paths still resolve
    checked = report.out_dir / "index_checked.html"
    checked.write_text(report.html.read_text().replace("</body>", IMAGE_CHECK + "</body>"))
    dom = run_chromium(checked, tmp_path / "profile", "--dump-dom", "--virtual-time-budget=5000")
    assert dom.returncode == 0, dom.stderr[-2000:]
    count = len(re.findall(r"<img ", report.html.read_text()))
    assert count == 4  # Figure 4 + 3 curve plots
    assert f'data-images="{count}/{count}"' in dom.stdout
    for anchor in ("transfer", "linear_probe", "teacher_vs_student", "grid", "timings"):
        assert f'id="{anchor}"' in dom.stdout
    assert dom.stdout.count("<table>") == 5
    assert "<strong>71.3</strong>" in dom.stdout

    screenshot = tmp_path / "page.png"
    shot = run_chromium(report.html, tmp_path / "profile", f"--screenshot={screenshot}",
                        "--window-size=1200,2000")
    assert shot.returncode == 0, shot.stderr[-2000:]
    pixels = np.asarray(Image.open(screenshot).convert("RGB"))
    assert pixels.shape == (2000, 1200, 3)
    # the page is not blank: a good share of the first screen is ink, tables and pictures
    assert (pixels.min(axis=-1) < 200).mean() > 0.05


def test_a_run_without_student_or_transfer(tmp_path: Path, files: Any) -> None:
    files.write_json(tmp_path / "run" / "timings.json", {"teach": 5.0})
    files.write_jsonl(tmp_path / "run" / "teachers" / "depth" / "metrics.jsonl",
                      [{"step": 1, "loss": 1.0}, {"step": 1, "eval/depth/delta1": 0.5}])
    result = write_report(tmp_path / "run")
    assert result.html.exists() and result.markdown.exists() and not (result.out_dir / "figure4.png").exists()
    results = json.loads(result.results_json.read_text())
    assert results["transfer"] == {} and results["teachers"] == {"depth": {"delta1": 0.5}}
    assert results["teacher_vs_student"]["depth"] == {"metric": "delta1", "teacher": 0.5, "student": None}
    page = result.html.read_text()
    assert 'id="notes"' in page and "Figure 4 left out" in page and "transfer table left out" in page
    assert 'id="transfer"' not in page and 'id="timings"' in page


def test_a_broken_student_is_a_note(run_dir: Path, tmp_path: Path) -> None:
    shutil.copytree(run_dir / "student", tmp_path / "run" / "student")
    (tmp_path / "run" / "student" / "checkpoint.pt").write_bytes(b"not a checkpoint")
    result = write_report(tmp_path / "run")
    assert any("Figure 4 left out" in note and "checkpoint.pt" in note for note in result.notes)
    with pytest.raises(FileNotFoundError):
        write_report(tmp_path / "nowhere")


def test_study_rows_get_their_paper_tables(tmp_path: Path, files: Any) -> None:
    values = {"supervised": (0.60, 0.30), "must_cls": (0.62, 0.30), "must_cls_depth": (0.61, 0.34),
              "must": (0.66, 0.40), "supervised_multitask": (0.58, 0.33)}
    for init, (top1, ap) in values.items():
        for task, value in (("classification", top1), ("detection", ap)):
            files.write_json(tmp_path / "run" / "transfer" / init / task / "best.json",
                             files.best_record(init, task, value))
    result = write_report(tmp_path / "run")
    means = json.loads(result.results_json.read_text())["transfer_mean"]
    assert means == pytest.approx({"supervised": 0.45, "must_cls": 0.46, "must_cls_depth": 0.475,
                                   "must": 0.53, "supervised_multitask": 0.455})
    text = result.markdown.read_text()
    ladder = text.split("Adding pseudo-label tasks (paper Table 3)")[1].split("\n## ")[0]
    rows = [line.split("|")[1].strip() for line in ladder.splitlines() if line.startswith("| ")][2:]
    assert rows == ["Supervised (classification)", "MuST: classification pseudo labels", "MuST: + depth",
                    "MuST (multi-task pseudo labels)"]
    assert "| MuST (multi-task pseudo labels) | **66.0** (+6.0) | **40.0** (+10.0) | **53.0** (+8.0) |" in ladder
    page = result.html.read_text()
    assert 'id="table3"' in page and 'id="table5"' in page  # supervised_multitask + must: two rows
    assert 'id="table4"' not in page  # no teacher rows


def test_figure4_normals_come_from_the_chosen_grid_cell(run_dir: Path, tmp_path: Path) -> None:
    # `must transfer` keeps each cell's checkpoint in cells/<cell>/; best.json names the chosen one
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    normals = run / "transfer" / "must" / "normals"
    (normals / "cells" / "lr0.1-steps200").mkdir(parents=True)
    for name in ("checkpoint.pt", "cell.json"):
        (normals / name).rename(normals / "cells" / "lr0.1-steps200" / name)
    result = write_report(run, figure_images=1, panel=48)
    assert not any("normals" in note for note in result.notes)
    assert result.figure is not None and "normals*" in result.figure.columns
    (normals / "cells" / "lr0.1-steps200" / "checkpoint.pt").unlink()
    result = write_report(run, figure_images=1, panel=48)
    assert any("transfer/must/normals/cells/lr0.1-steps200/checkpoint.pt" in note for note in result.notes)


def test_a_lasso_pretraining_gets_its_heat_map(tmp_path: Path, lasso_checkpoint: Any) -> None:
    tasks = lasso_checkpoint(tmp_path / "run" / "pretrain" / "multi" / "checkpoint.pt")
    result = write_report(tmp_path / "run")
    assert (result.out_dir / "lasso_multi.png").exists()
    lasso = json.loads(result.results_json.read_text())["lasso"]["multi"]
    assert lasso["tasks"] == tasks and len(lasso["units"]) == 10
    # results.json is collect_results' dict: the lasso tables are collected, not added by the page
    assert collect_results(tmp_path / "run")["lasso"] == {"multi": lasso}
    assert 'id="lasso"' in result.html.read_text() and 'src="lasso_multi.png"' in result.html.read_text()
    assert "lasso_multi.png" in result.markdown.read_text()
