"""Self-supervised methods beside SimCLR in the demo's transfer table (MuST Table 2's comparison,
with the methods users compare against): each method pre-trains the demo's trunk on the demo's
pool with SimCLR's budget (the demo preset: 120 steps of 32 images, lr 0.05), then every row is
fine-tuned on the demo's five downstream tasks by the demo itself (one cell per task, the preset's
learning rate and steps), and k-NN top-1 on Fashion-MNIST is taken for every row.

It adds the rows to a finished demo run directory (``must demo --out RUN`` with ``pretrain.<m>``
entries and a longer ``transfer.inits``: the demo's own stages are skipped, so the scratch,
supervised, SimCLR and MuST rows are the demo's), then collects the demo's report into
``docs/measurements/ssl_transfer.json`` with the commit, the UTC time and the commands.

    python -m benchmarks.ssl_transfer --run /work/m9      # the directory holding runs/demo

One seed, one cell per task: the spread between rows within a couple of points is the noise of a
single fine-tuning cell (docs/results.md), not a ranking.
"""

from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path
from typing import Any

from benchmarks.common import command_line, run_stamp

HERE = Path(__file__).resolve().parent
RESULT = HERE.parent / "docs" / "measurements" / "ssl_transfer.json"
METHODS = ("byol", "mocov3", "dino", "barlow_twins", "vicreg", "mae")
DEMO_ROWS = ("scratch", "supervised", "simclr", "must")
VIT_ROW = '{model: {backbone: "timm:vit_tiny_patch16_224"}, transfer: {lrs: [0.01]}}'
"""MAE needs a ViT trunk: ViT-tiny, fine-tuned at lr 0.01 (the suite's SGD rates diverge on it,
docs/results.md "Backbones"), beside a ViT row from scratch (``scratch_vit``) as its reference."""


def demo_arguments(methods: tuple[str, ...], steps: int, batch_size: int, lr: float) -> list[str]:
    """``must demo`` arguments adding one pre-training per method and every row to the transfer
    (MAE with AdamW, its paper's optimizer, at lr 1e-3 with a 10% warm-up, on the ViT row)."""
    plans, rows = [], []
    for method in methods:
        train = f"steps: {steps}, batch_size: {batch_size}, lr: {lr}"
        if method == "mae":
            train = (f"steps: {steps}, batch_size: {batch_size}, optimizer: adamw, lr: 0.001, weight_decay: 0.05, "
                     f"warmup_steps: {max(1, steps // 10)}")
            rows += [f"rows.mae={VIT_ROW}", f"rows.scratch_vit={VIT_ROW}"]
        plans.append(f"pretrain.{method}={{method: {method}, train: {{{train}}}}}")
    inits = ",".join((*DEMO_ROWS, *methods, *(["scratch_vit"] if "mae" in methods else [])))
    return ["demo", "--out", "runs/demo", *plans, *rows, f"transfer.inits=[{inits}]", "transfer.knn=true"]


def collect(demo: Path) -> dict[str, Any]:
    """Per row: the transfer metric of every task (test split), their mean, the k-NN top-1, and for
    the pre-trainings their first / last logged loss and seconds."""
    results = json.loads((demo / "report" / "results.json").read_text())
    timings = results.get("timings", {})
    rows: dict[str, Any] = {}
    for init in results["transfer"]:
        cells = results["transfer"].get(init, {})
        row: dict[str, Any] = {"transfer": {task: cell["value"] for task, cell in sorted(cells.items())},
                               "mean": results.get("transfer_mean", {}).get(init),
                               "knn": {task: cell["value"] for task, cell in results.get("knn", {}).get(init, {}).items()}}
        record = demo / "pretrain" / init / "pretrain.json"
        if record.exists():
            losses = json.loads(record.read_text()).get("losses") or {}
            row["pretrain"] = {"losses": losses, "seconds": timings.get(f"pretrain/{init}")}
        rows[init] = row
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, required=True,
                        help="directory holding a finished demo's runs/demo (rows are added to it)")
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--steps", type=int, default=120, help="pre-training steps (the demo's SimCLR: 120)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--collect-only", action="store_true", help="only read the finished run's report")
    parser.add_argument("--json", type=Path, default=RESULT)
    args = parser.parse_args()
    methods = tuple(args.methods)
    arguments = demo_arguments(methods, args.steps, args.batch_size, args.lr)
    if not args.collect_only:
        import os

        from benchmarks.common import run_must

        os.chdir(args.run)  # the demo's paths are relative to the directory it ran in
        run_must(arguments)
    result = {**run_stamp(), "command": command_line("benchmarks.ssl_transfer"),
              "demo_command": "must " + shlex.join(arguments),
              "schedule": {"steps": args.steps, "batch_size": args.batch_size, "lr": args.lr,
                           "note": "the demo's SimCLR budget for every method; one fine-tuning cell per task"},
              "rows": collect(args.run / "runs" / "demo")}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["rows"], indent=1))


if __name__ == "__main__":
    main()
