"""Self-supervised methods side by side on a finished demo run's unlabeled pool, at a REDUCED
schedule: each method pre-trains the demo's trunk for ``--steps`` steps (the demo's SimCLR: 120
steps of 32 images), then ``must transfer`` fine-tunes it on classification (Fashion-MNIST, the
demo's transfer task) for ``--transfer-steps`` steps; a from-scratch row fine-tunes the same way.
Far too short to rank the methods: a check that each one trains end to end and a record of its
cost, not the paper's comparison.

    python -m benchmarks.ssl_methods --run /work/demo-run2 --scratch /tmp/ssl_methods \\
        [--steps 20 --batch-size 16 --transfer-steps 100]     # writes docs/measurements/ssl.json

To keep editing the checkout while it runs, run an exported copy:
``git archive HEAD | tar -x -C /tmp/copy`` then, in /tmp/copy, ``PYTHONPATH=src`` and the command above with
``--commit $(git rev-parse HEAD) --output <checkout>/docs/measurements/ssl.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.common import command_line, run_stamp, transfer_best

REPOSITORY = Path(__file__).resolve().parent.parent
METHODS = ("simclr", "byol", "mocov3", "dino", "barlow_twins", "vicreg")


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


def pretrain(method: str, run: Path, scratch: Path, steps: int, batch_size: int) -> dict[str, Any]:
    out = scratch / "pretrain" / method
    command = must_command("pretrain", "--method", method, "--data", "folder:runs/demo/data/pool/train/images",
                           "--out", str(out), f"train.steps={steps}", f"train.batch_size={batch_size}",
                           "train.lr=0.05", "train.log_every=1", "train.progress=false", "image_size=64",
                           "model.width=0.25", "model.fpn_channels=32")
    result = timed(command, run)
    losses = logged_losses(out)
    return {**result, "first_loss": losses[0], "last_loss": losses[-1], "steps": len(losses),
            "checkpoint": str(out / "checkpoint.pt")}


def transfer(name: str, init: str, run: Path, scratch: Path, steps: int) -> dict[str, Any]:
    # The demo's saved config names its own init (the student): the overrides, applied last, replace it.
    command = must_command("transfer", "--init", init, "--name", name, "--out", str(scratch),
                           "--config", "runs/demo/transfer/must/config_finetune.yaml",
                           "--tasks", "classification", "--steps", str(steps), "progress=false",
                           f"init={'null' if init == 'none' else init}", f"init_name={name}")
    result = timed(command, run)
    best = transfer_best(scratch, name, "classification")
    return {**result, "val_top1": best["val"], "test_top1": best["test"], "lr": best["lr"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="a finished demo run's directory (read only)")
    parser.add_argument("--scratch", type=Path, required=True, help="where the runs go (outside --run)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--transfer-steps", type=int, default=100, help="0: pre-training only")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--output", type=Path, default=REPOSITORY / "docs" / "measurements" / "ssl.json")
    parser.add_argument("--commit", help="the measured commit when running from an exported copy "
                                         "(git archive) without .git; default: this checkout's")
    args = parser.parse_args()
    stamp = run_stamp(commit=args.commit)  # before anything runs: the code the runs use
    rows: dict[str, Any] = {}
    if args.transfer_steps:
        rows["scratch"] = {"transfer": transfer("scratch", "none", args.run, args.scratch, args.transfer_steps)}
    for method in args.methods.split(","):
        row = {"pretrain": pretrain(method, args.run, args.scratch, args.steps, args.batch_size)}
        if args.transfer_steps:
            row["transfer"] = transfer(method, row["pretrain"]["checkpoint"], args.run, args.scratch,
                                       args.transfer_steps)
        rows[method] = row
    record = {
        **stamp, "command": command_line("benchmarks.ssl_methods"),
        "schedule": (f"REDUCED: {args.steps} pre-training steps of {args.batch_size} images per method "
                     "(the demo's SimCLR: 120 of 32), "
                     + (f"classification transfer {args.transfer_steps} steps at one learning rate (the "
                        "demo: 200)" if args.transfer_steps else "no transfer (--transfer-steps 0)")
                     + "; too short to rank the methods"),
        "rows": rows,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps({name: {key: value for part in row.values() for key, value in part.items()
                             if key in ("first_loss", "last_loss", "cpu_seconds", "test_top1")}
                      for name, row in rows.items()}, indent=1))


if __name__ == "__main__":
    main()
