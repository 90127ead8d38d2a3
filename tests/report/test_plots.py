"""Training curves: one PNG per teacher and one for the student, the right keys in each; a lasso
heat map (tasks x levels) per pre-training that learned a lasso."""

from pathlib import Path
from typing import Any

import torch
from PIL import Image

from must.report.plots import eval_keys, loss_keys, plot_curves, plot_lassos, plot_run_curves
from must.report.results import collect_lassos


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


def test_lasso_heat_map_per_pretraining_with_a_lasso(tmp_path: Path, lasso_checkpoint: Any) -> None:
    run = tmp_path / "run"
    tasks = lasso_checkpoint(run / "pretrain" / "multi" / "checkpoint.pt")
    plots = plot_lassos(collect_lassos(run), tmp_path / "report")
    assert [plot.name for plot in plots] == ["multi"]
    plot = plots[0]
    assert plot.path == tmp_path / "report" / "lasso_multi.png" and Image.open(plot.path).size[0] > 300
    assert plot.table["tasks"] == tasks
    assert plot.table["units"] == ["c2", "c3", "c4", "c5", "p2", "p3", "p4", "p5", "p6", "p7"]
    alpha = plot.table["alpha"]
    assert [len(row) for row in alpha] == [10, 10]
    assert alpha[0][:4] == [0.25] * 4 and alpha[0][4:] == [None] * 6  # JSON-ready: None, not NaN
    assert alpha[1][:4] == [None] * 4 and alpha[1][4:] == [1.0, 1.0, 1.0, 0.0, 0.0, 0.0]


def test_no_lasso_no_heat_map(tmp_path: Path) -> None:
    from must.train.checkpoint import save_atomically

    (tmp_path / "pretrain" / "simclr").mkdir(parents=True)
    save_atomically({"model": {"backbone.conv1.weight": torch.zeros(1)}}, tmp_path / "pretrain" / "simclr" / "checkpoint.pt")
    assert collect_lassos(tmp_path) == {} and plot_lassos({}, tmp_path / "report") == []
    assert not (tmp_path / "report").exists()
