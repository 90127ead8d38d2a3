"""``must transfer``: the command line of :func:`must.transfer.run.run_transfer` (MuST sec. 3.5).

    must transfer --init runs/x/student/checkpoint.pt --name must --out runs/x
    must transfer --init none --out runs/x --tasks classification,depth tasks.depth.steps=[100,200]
    must transfer --init none --out runs/x --steps 20 --lrs 0.05,0.1
    must transfer --init resnet18.pth --name supervised --out runs/x --mode linear workers=2

The config starts from the default suite (Fashion-MNIST classification and the world's
``transfer`` domain, generated into ``<out>/data/transfer`` when missing, as ``must demo`` does),
then a preset (its ``transfer:`` section if it has one), then ``key.sub=value`` overrides.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from must import config as config_lib
from must.config import ConfigError
from must.data.readers.fashion_mnist import DEFAULT_ROOT as FASHION_MNIST_ROOT
from must.transfer.config import WORLD_SPLITS, TransferConfig, default_suite

SUMMARY = "fine-tune checkpoints on downstream tasks, grid search (sec. 4)"
NO_INIT = ("none", "scratch")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Fine-tune a checkpoint on downstream tasks (MuST sec. 3.5, supp. sec. 2.3): backbone + FPN "
        "from --init, new heads, cosine learning rate, weight decay 1e-4, a grid over learning rate x "
        "steps per task chosen on validation and reported on test. Writes "
        "<out>/transfer/<name>/<task>/{grid.jsonl, best.json} (best_linear.json with --mode linear). "
        "Finished grid cells are skipped and interrupted ones resume. Under torchrun each rank "
        "trains every N-th cell. The default suite (5 tasks, one cell each, 1,200 steps in all) takes "
        "about 1 minute per --init on 2 idle CPU cores (the demo's transfer stage: 20 such cells in "
        "209 s, two at a time in bf16); --steps 20 makes it a smoke test.")
    parser.add_argument("--init", required=True, metavar="CKPT|none",
                        help="our checkpoint.pt, a torchvision / timm ResNet weight file, or none")
    parser.add_argument("--name", help="row name (scratch, supervised, simclr, must, ...); default: "
                                       "scratch without --init, else the checkpoint's folder name")
    parser.add_argument("--out", required=True, type=Path, help="run directory, e.g. runs/demo")
    parser.add_argument("--mode", choices=("finetune", "linear"),
                        help="finetune (end to end, the default) or linear (frozen backbone + FPN)")
    parser.add_argument("--tasks", help="comma-separated subset of the suite's tasks")
    parser.add_argument("--steps", metavar="N[,N...]",
                        help="training steps of every chosen task's grid, e.g. 20 for a quick look "
                             "(default: each task's own, 200 or 400)")
    parser.add_argument("--lrs", metavar="LR[,LR...]",
                        help="learning rates of every chosen task's grid, e.g. 0.05,0.1 (default: each "
                             "task's own)")
    parser.add_argument("--world", type=Path, help="world transfer domain with train/ val/ test/ "
                                                   "(default: <out>/data/transfer)")
    parser.add_argument("--fashion", default=FASHION_MNIST_ROOT,
                        help=f"Fashion-MNIST idx folder (default {FASHION_MNIST_ROOT}; when absent "
                             "classification uses the world's image classes)")
    config_lib.add_config_arguments(parser, TransferConfig, "transfer",
                                     "workers=2 model.width=0.5 tasks.depth.lrs=[0.05,0.1]")


def row_name(init: str | None) -> str:
    if init is None:
        return "scratch"
    return Path(init).resolve().parent.name or Path(init).stem


def build_config(args: argparse.Namespace) -> TransferConfig:
    """Default suite -> preset -> overrides -> ``--tasks`` subset, validated."""
    init = None if args.init.lower() in NO_INIT else args.init
    world = args.world or args.out / "data" / "transfer"
    base = TransferConfig(init=None, tasks=default_suite(world, args.fashion))

    def with_flags(data: dict) -> dict:
        """The command line's own options win over a preset's (a finished run's
        ``config_finetune.yaml`` names its own init)."""
        data = {**data, "init": init, "init_name": args.name or row_name(init)}
        return {**data, "mode": args.mode} if args.mode else data

    config = config_lib.load(TransferConfig, args.config, args.overrides, section="transfer",
                             defaults=config_lib.to_dict(base), flags=with_flags)
    if args.tasks:
        chosen = [name.strip() for name in args.tasks.split(",") if name.strip()]
        unknown = [name for name in chosen if name not in config.tasks]
        if unknown:
            raise ConfigError(f"--tasks: unknown task(s) {unknown}; the suite has: {', '.join(config.tasks)}")
        config = config_lib.replace(config, tasks={name: config.tasks[name] for name in chosen})
    return with_grid(config, parse_values("--steps", args.steps, int), parse_values("--lrs", args.lrs, float))


def parse_values(flag: str, value: str | None, kind: type) -> tuple | None:
    """``"100,200"`` -> ``(100, 200)``; None when the flag was not given."""
    if value is None:
        return None
    try:
        values = tuple(kind(item) for item in value.split(",") if item.strip())
    except ValueError:
        values = ()
    if not values or any(item <= 0 for item in values):
        raise ConfigError(f"{flag} '{value}': expected positive comma-separated numbers, e.g. {flag} "
                          f"{'20' if kind is int else '0.05,0.1'}")
    return values


def with_grid(config: TransferConfig, steps: tuple[int, ...] | None, lrs: tuple[float, ...] | None,
              ) -> TransferConfig:
    """Every task's grid (supp. sec. 2.3: learning rates x steps) set to the given values."""
    changes = {**({"steps": steps} if steps else {}), **({"lrs": lrs} if lrs else {})}
    if not changes:
        return config
    return config_lib.replace(config, tasks={name: dataclasses.replace(task, **changes)
                                             for name, task in config.tasks.items()})


def ensure_world(config: TransferConfig, world: Path) -> None:
    """Generates the world's transfer splits the tasks read from ``world`` when missing, with the
    demo's counts, size and per-split seeds (so ``must demo`` finds the same data)."""
    from must.world import generate, is_complete
    from must.world.splits import WorldDataConfig, split_seed

    roots = {Path(dataset.root) for spec in config.tasks.values()
             for dataset in (spec.train, spec.val, spec.test) if dataset is not None and dataset.format == "world"}
    defaults = WorldDataConfig()
    for split in WORLD_SPLITS:
        directory = world / split
        if directory in roots and not is_complete(directory):
            count = defaults.splits["transfer"][split]
            print(f"generating {count} world 'transfer' images into {directory}", flush=True)
            generate("transfer", directory, count=count, size=defaults.size,
                     seed=split_seed(defaults.seed, "transfer", split), workers=defaults.workers)


def run(args: argparse.Namespace) -> int:
    from must.transfer.run import run_transfer

    config = build_config(args)
    ensure_world(config, args.world or args.out / "data" / "transfer")
    bests = run_transfer(config, args.out)
    for name, best in bests.items():
        print(f"{config.init_name}/{name} ({config.mode}): {best['metric']} = {best['value']:.4f} "
              f"(val {best['val_value']:.4f} at lr {best['lr']:g}, {best['steps']} steps)")
    missing = [name for name in config.tasks if name not in bests]
    if missing:
        print(f"cells of {', '.join(missing)} still running in other processes; their best files are "
              "written by whichever finishes last")
    return 0
