"""k-NN top-1 (``must transfer --mode knn`` writes ``best_knn.json`` beside ``best.json``) lands
in ``results.json``'s ``knn`` block and a table of its own, for every pre-training that has it, and
never in the fine-tuning table."""

from __future__ import annotations

import json
from pathlib import Path

from must.report import collect_results, write_report


def knn_record(init: str, value: float, with_mode: bool = True) -> dict:
    record = {"init": init, "task": "classification", "metric": "top1", "value": value, "k": 20,
              "temperature": 0.07, "memory": 100, "queries": 50, "seconds": 1.0}
    return {**record, "mode": "knn"} if with_mode else record


def test_knn_results_get_their_own_block_and_table(tmp_path: Path) -> None:
    run = tmp_path / "run"
    for init, finetune, knn in (("supervised", 0.8, 0.7), ("simclr", 0.75, 0.6), ("must", 0.82, None)):
        folder = run / "transfer" / init / "classification"
        folder.mkdir(parents=True)
        (folder / "best.json").write_text(json.dumps(
            {"init": init, "task": "classification", "metric": "top1", "lr": 0.1, "steps": 10,
             "mode": "finetune", "val_value": finetune, "value": finetune}))
        if knn is not None:
            (folder / "best_knn.json").write_text(json.dumps(knn_record(init, knn, with_mode=init != "simclr")))
    results = collect_results(run)
    assert {init: row["classification"]["value"] for init, row in results["transfer"].items()} == {
        "supervised": 0.8, "simclr": 0.75, "must": 0.82}
    assert {init: row["classification"]["value"] for init, row in results["knn"].items()} == {
        "supervised": 0.7, "simclr": 0.6}
    markdown = write_report(run, tmp_path / "report", figure_images=0).markdown.read_text()
    table = markdown[markdown.index("## k-NN on frozen features"):].split("\n## ")[0]
    assert "| Self-supervised (SimCLR) | 60.0 (-10.0) |" in table
    assert "must" not in table.lower().replace("must transfer", "")
