"""Doersch & Zisserman's four-task multi-task self-supervision vs. three tasks vs. motion
segmentation alone (2017, sec. 2-3 and Table 2's rows), on the world's video clips, each
checkpoint then fine-tuned on downstream tasks of the demo's transfer suite (MuST sec. 3.5).

Every row pre-trains on the same frames (``must world video``) with the same model and updates:
``motion_segmentation`` (one head), ``doersch3`` (``multi``: relative position, colorization,
exemplar) and ``doersch4`` (the three + motion segmentation), alternating (sec. 3), a reduced
schedule; ``scratch`` is the no-pre-training reference. The transfer cells are ``must transfer``
with ``--tasks`` and ``--steps``. The result (commit, UTC time, machine, the commands, the
numbers) goes to ``docs/measurements/doersch4.json``.

    python -m benchmarks.doersch4 --world /work/demo-run2/runs/demo/data/transfer --out /tmp/doersch4
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from benchmarks.common import command_line, run_must, run_stamp, transfer_best

HERE = Path(__file__).resolve().parent
RESULT = HERE.parent / "docs" / "measurements" / "doersch4.json"
MODEL = ["model.backbone=resnet18", "model.width=0.25", "model.fpn_channels=32", "image_size=64"]
ROWS: dict[str, list[str]] = {
    "motion_segmentation": ["--method", "motion_segmentation"],
    "doersch3": ["--method", "multi", "tasks=[relative_position,colorization,exemplar]"],
    "doersch4": ["--method", "multi", "tasks=[relative_position,colorization,exemplar,motion_segmentation]"],
}
"""Each row's method and its overrides (``--method`` first, the overrides after every flag)."""


def command(argv: list[str]) -> dict[str, Any]:
    """Runs ``must ARGV`` in this process; its wall time."""
    return {"command": "must " + " ".join(argv), "seconds": run_must(argv)}


def measure(world: Path, out: Path, clips: int, frames: int, steps: int, batch_size: int,
            tasks: str, transfer_steps: int, eval_limit: int | None = None) -> dict[str, Any]:
    stamp = run_stamp()
    video = out / "video"
    runs = [command(["world", "video", "--out", str(video), "--count", str(clips), "--frames", str(frames),
                     "--size", "64"])]
    inits: dict[str, str] = {"scratch": "none"}
    for row, flags in ROWS.items():
        directory = out / "pretrain" / row
        runs.append(command(["pretrain", *flags[:2], "--data", f"video:{video}", "--out", str(directory),
                             *flags[2:], *MODEL,
                             f"train.steps={steps}", f"train.batch_size={batch_size}", "train.lr=0.05",
                             "train.progress=false"]))
        inits[row] = str(directory / "checkpoint.pt")
    chosen = [name for name in tasks.split(",") if name]
    limits = [f"tasks.{task}.{split}.limit={eval_limit}" for task in chosen for split in ("val", "test")
              if eval_limit is not None]
    for row, init in inits.items():
        runs.append(command(["transfer", "--init", init, "--name", row, "--out", str(out), "--world", str(world),
                             "--tasks", tasks, "--steps", str(transfer_steps), *MODEL[:3], *limits]))
    return {"run": stamp, "data": {"clips": clips, "frames": frames, "size": 64},
            "pretrain": {"updates": steps, "batch_size": batch_size, "schedule": "alternate"},
            "transfer": {"tasks": chosen, "steps": transfer_steps, "world": str(world),
                         "val_and_test_images": eval_limit},
            "results": {row: {task: transfer_best(out, row, task) for task in chosen} for row in inits},
            "commands": runs}


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--world", type=Path, required=True, help="the world's transfer domain (train/ val/ test/)")
    parser.add_argument("--out", type=Path, required=True, help="scratch directory for data and runs")
    parser.add_argument("--clips", type=int, default=40)
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--steps", type=int, default=30, help="pre-training optimizer updates per row")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--tasks", default="segmentation,depth", help="transfer tasks of the suite")
    parser.add_argument("--transfer-steps", type=int, default=100)
    parser.add_argument("--eval-limit", type=int, default=None, help="at most this many val and test images")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    result = measure(args.world, args.out, args.clips, args.frames, args.steps, args.batch_size, args.tasks,
                     args.transfer_steps, args.eval_limit)
    result["invocation"] = command_line("benchmarks.doersch4", argv)
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result["results"], indent=1))


if __name__ == "__main__":
    main()
