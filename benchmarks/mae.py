"""MAE pre-training (He et al. 2022) of a ViT-tiny on a finished demo run's unlabeled pool, at a
REDUCED schedule: ``--steps`` steps of ``--batch-size`` 64 px images (AdamW with warmup, as MAE
appendix A.1, at a rate raised for the short run). Records the reconstruction loss curve (masked
patches, per-patch normalized targets) and the cost per step: a check that MAE trains end to end,
not a representation-quality result.

    python -m benchmarks.mae --pool /work/demo-run3/runs/demo/data/pool/train/images \\
        --scratch /tmp/mae [--steps 120 --batch-size 32]          # writes docs/measurements/mae.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.common import command_line, run_stamp

REPOSITORY = Path(__file__).resolve().parent.parent
BACKBONE = "timm:vit_tiny_patch16_224"


def must_command(*arguments: str) -> list[str]:
    return [sys.executable, "-m", "must.cli", *arguments]


def timed(command: list[str], cwd: Path) -> dict[str, Any]:
    """Runs ``command`` in ``cwd`` with this repository's source; wall and CPU seconds."""
    environment = {**os.environ, "PYTHONPATH": str(REPOSITORY / "src"), "HF_HUB_OFFLINE": "1"}
    before, start = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    subprocess.run(command, cwd=cwd, env=environment, check=True, capture_output=True, text=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"command": " ".join(command[2:]).replace("must.cli", "must", 1),
            "wall_seconds": round(time.perf_counter() - start, 1), "cpu_seconds": round(cpu, 1)}


def logged_losses(out: Path) -> list[float]:
    entries = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [float(entry["loss"]) for entry in entries if "loss" in entry]


def pretrain(pool: Path, out: Path, steps: int, batch_size: int, lr: float) -> dict[str, Any]:
    command = must_command("pretrain", "--method", "mae", "--data", f"folder:{pool}", "--out", str(out),
                           f"model.backbone={BACKBONE}", "image_size=64", f"train.steps={steps}",
                           f"train.batch_size={batch_size}", "train.optimizer=adamw", f"train.lr={lr}",
                           "train.weight_decay=0.05", f"train.warmup_steps={max(1, steps // 10)}",
                           "train.log_every=1", "train.progress=false")
    result = timed(command, out.parent)
    losses = logged_losses(out)
    window = max(1, min(10, len(losses) // 4))
    return {**result, "steps": len(losses), "batch_size": batch_size,
            "seconds_per_step_wall": round(result["wall_seconds"] / len(losses), 3),
            "seconds_per_step_cpu": round(result["cpu_seconds"] / len(losses), 3),
            "first_loss": losses[0], "last_loss": losses[-1],
            f"mean_loss_first_{window}": statistics.mean(losses[:window]),
            f"mean_loss_last_{window}": statistics.mean(losses[-window:]),
            "losses": [round(loss, 5) for loss in losses]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pool", type=Path, required=True, help="a folder of unlabeled images (read only)")
    parser.add_argument("--scratch", type=Path, required=True, help="where the run goes")
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--output", type=Path, default=REPOSITORY / "docs" / "measurements" / "mae.json")
    parser.add_argument("--commit", help="the measured commit when running from an exported copy (git archive)")
    args = parser.parse_args()
    stamp = run_stamp(commit=args.commit)  # before anything runs: the code the run uses
    args.scratch.mkdir(parents=True, exist_ok=True)
    row = pretrain(args.pool.resolve(), args.scratch.resolve() / "mae", args.steps, args.batch_size, args.lr)
    record = {**stamp, "command": command_line("benchmarks.mae"),
              "schedule": f"REDUCED: {args.steps} MAE steps of {args.batch_size} images, ViT-tiny at 64 px "
                          f"(16 patches, 4 visible), AdamW lr {args.lr}, weight decay 0.05",
              "pretrain": row}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps({key: value for key, value in row.items() if key != "losses"}, indent=1))


if __name__ == "__main__":
    main()
