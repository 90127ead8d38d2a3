"""Doersch & Zisserman's row both ways (2017, sec. 4.3 "harmonization"): a ``multi`` pre-training
with harmonized inputs (and the lasso, sec. 4.2) on the demo's unlabeled pool, fine-tuned on the
world's transfer tasks twice: fed the lightness images it was trained on (``input_transform=auto``,
read from the checkpoint) and fed RGB (``input_transform=rgb``, what transfer did before it
recorded the transform). One seed, a much reduced schedule so that it fits a shared CPU: 40
joint pre-training steps of 8 images, and the depth column fine-tuned for 50 steps (the demo
suite's cell has 200; the demo run's own scratch and SimCLR rows, at 200, are listed for scale).

    python -m benchmarks.harmonize_transfer --demo /work/demo-run2/runs/demo --work /tmp/harmonize
        # writes docs/measurements/harmonize.json
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
from pathlib import Path
from typing import Any

from benchmarks.common import command_line, run_must, run_stamp, transfer_best
from must.models.lasso import read_lasso_matrix
from must.train import checkpoint as checkpoints

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "measurements" / "harmonize.json"
TASKS = ("depth",)
PRETRAIN = ("schedule=joint", "lasso=0.001", "harmonize=true", "train.steps=40", "train.batch_size=8")
TRANSFER_STEPS = 50
TRANSFER = {"harmonized": "input_transform=auto", "rgb": "input_transform=rgb"}


def demo_rows(demo: Path) -> dict[str, dict[str, Any]]:
    """The demo run's own rows on the same tasks (its grid: 200 steps, bf16), for scale."""
    return {init: {task: transfer_best(demo, init, task) for task in TASKS}
            for init in ("scratch", "simclr") if (demo / "transfer" / init / TASKS[0] / "best.json").exists()}


def json_ready(table: dict[str, Any] | None) -> dict[str, Any] | None:
    """The lasso table with None (JSON null) where a task has no weight, instead of NaN."""
    if table is None:
        return None
    return {**table, "alpha": [[None if math.isnan(value) else value for value in row] for row in table["alpha"]]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--demo", type=Path, required=True, help="a finished `must demo` run directory (read only)")
    parser.add_argument("--work", type=Path, required=True, help="where the pre-training and transfers go")
    args = parser.parse_args(argv)
    demo, work = args.demo.resolve(), args.work.resolve()
    pretrain_dir = work / "pretrain" / "doersch"
    commands: dict[str, list[str]] = {"pretrain": [
        "pretrain", "--method", "multi", "--data", f"world:{demo / 'data' / 'pool' / 'train'}",
        "--out", str(pretrain_dir), *PRETRAIN]}
    for name, setting in TRANSFER.items():
        commands[f"transfer_{name}"] = [
            "transfer", "--init", str(pretrain_dir / "checkpoint.pt"), "--name", f"doersch_{name}",
            "--out", str(work), "--world", str(demo / "data" / "transfer"), "--tasks", ",".join(TASKS),
            "--steps", str(TRANSFER_STEPS), setting, "workers=1", "progress=false"]
    seconds = {key: run_must(command) for key, command in commands.items()}
    rows = {name: {task: transfer_best(work, f"doersch_{name}", task) for task in TASKS} for name in TRANSFER}
    result = {
        **run_stamp(),
        "command": command_line("benchmarks.harmonize_transfer", argv),
        "must_commands": {key: "must " + shlex.join(command)
                          for key, command in commands.items()},
        "seconds": seconds,
        "doersch": rows,
        "harmonized_minus_rgb": {task: rows["harmonized"][task]["test"] - rows["rgb"][task]["test"] for task in TASKS},
        "demo_rows": demo_rows(demo),
        "lasso": json_ready(read_lasso_matrix(checkpoints.load(pretrain_dir / "checkpoint.pt"))),
        "note": "one seed, one grid cell per task: differences of a few points are within run-to-run noise",
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    for name, tasks in rows.items():
        print(name, {task: round(entry["test"], 4) for task, entry in tasks.items()})
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
