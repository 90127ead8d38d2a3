"""Training curves: one PNG per teacher and one for the student, the right keys in each."""

from pathlib import Path
from typing import Any

from PIL import Image

from must.report.plots import eval_keys, loss_keys, plot_curves, plot_run_curves


def test_keys_per_run() -> None:
    student = [{"step": 1, "loss": 2.0, "loss/depth": 1.0, "loss/segmentation": 1.0, "loss/depth/part": 0.5,
                "eval/depth/delta1": 0.1, "eval/depth/rmse": 2.0, "eval/rotation/accuracy": 0.3}]
    assert loss_keys(student) == ["loss", "loss/depth", "loss/segmentation"]
    # the primary metric of a known task; every metric of a task without one
    assert eval_keys(student) == ["eval/depth/delta1", "eval/rotation/accuracy"]
    teacher = [{"step": 1, "loss": 2.0, "loss/depth": 2.0}]
    assert loss_keys(teacher) == ["loss"]  # a single task's loss is the total


def test_one_picture_per_run(run_dir: Path, tmp_path: Path) -> None:
    plots = plot_run_curves(run_dir, tmp_path)
    assert [plot.name for plot in plots] == ["teacher classification", "teacher detection", "student"]
    for plot in plots:
        assert Image.open(plot.path).size == (1000, 340)


def test_nothing_logged_writes_nothing(tmp_path: Path, files: Any) -> None:
    files.write_jsonl(tmp_path / "metrics.jsonl", [{"step": 1, "lr": 0.1}])
    assert plot_curves(tmp_path / "metrics.jsonl", tmp_path / "out.png", "empty") is None
    assert not (tmp_path / "out.png").exists()
    assert plot_curves(tmp_path / "missing.jsonl", tmp_path / "out.png", "missing") is None
