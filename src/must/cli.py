"""The ``must`` command line: one verb per pipeline stage, each a thin layer over library code.

    must world DOMAIN --out DIR        generate a dataset of the procedural world
    must teach  --task T ...           train a single-task teacher          (MuST sec. 3.1)
    must label  ...                    pseudo-label a shared image set       (MuST sec. 3.2)
    must train  ...                    train the multi-task student          (MuST sec. 3.3-3.4)
    must transfer ...                  fine-tune checkpoints on downstream tasks (sec. 4)
    must pretrain --method M ...       self-supervised pre-training (SimCLR, pretext tasks)
    must report ...                    write the HTML / Markdown / JSON report
    must demo                          all of the above on the embedded world

Stage settings are frozen dataclass configs: ``--config PRESET`` (a YAML file or a shipped preset
name) plus ``key.sub=value`` overrides after the flags; ``must <verb> --help`` lists them.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from must.config import ConfigError

VERBS: dict[str, Callable[[argparse.ArgumentParser], Callable[[argparse.Namespace], int]]] = {}


def verb(name: str):
    """Registers a verb builder in the one explicit dict of verbs (fails on duplicates)."""

    def register(builder):
        if name in VERBS:
            raise ValueError(f"verb '{name}' defined twice")
        VERBS[name] = builder
        return builder

    return register


def _overrides_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("overrides", nargs="*", metavar="key.sub=value",
                        help="config overrides, e.g. train.steps=200 model.width=0.5")


def _config_argument(parser: argparse.ArgumentParser, default: str | None = None) -> None:
    parser.add_argument("--config", default=default, metavar="PRESET",
                        help="YAML preset: a path or a shipped name (demo, study, paper)"
                        + (f"; default: {default}" if default else ""))


@verb("world")
def _world(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    from must.world import DOMAINS

    parser.description = (
        "Generate one domain of the procedural 3-D world to disk in standard formats: ImageFolder "
        "classes, COCO JSON boxes, PNG masks, 16-bit depth PNG (mm), normals .npy. Resumable: "
        "files already written are kept.")
    parser.add_argument("domain", choices=sorted(DOMAINS), help="which domain preset")
    parser.add_argument("--out", required=True, type=Path, help="output directory")
    parser.add_argument("--count", type=int, default=1000, help="number of images (default 1000)")
    parser.add_argument("--size", type=int, default=64, help="image side in pixels (default 64)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--workers", type=int, default=1, help="processes to render with")

    def run(args: argparse.Namespace) -> int:
        from must.world import generate

        if args.count <= 0 or args.size < 16:
            raise ConfigError("--count must be positive and --size at least 16")
        out = generate(args.domain, args.out, count=args.count, size=args.size, seed=args.seed,
                       workers=args.workers)
        print(f"wrote {args.count} '{args.domain}' images to {out}")
        return 0

    return run


def _dataset_spec(flag: str, value: str) -> dict[str, str]:
    """``FORMAT:ROOT`` -> ``{"format": FORMAT, "root": ROOT}``."""
    from must.data.readers.config import parse_dataset_spec

    return parse_dataset_spec(value, flag)


def _dataset_override(flag: str, key: str, value: str | None) -> list[str]:
    """``--data FORMAT:ROOT`` -> ``data.format=FORMAT data.root=ROOT``."""
    if value is None:
        return []
    return [f"{key}.{name}={item}" for name, item in _dataset_spec(flag, value).items()]


@verb("teach")
def _teach(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    from must.data.readers import FORMATS
    from must.tasks import TASK_BUILDERS

    parser.description = (
        "Train a single-task teacher on a labeled dataset (MuST sec. 3.1): the student's ResNet-FPN "
        "with one head, scale jitter [0.5, 2.0]. Writes checkpoint.pt, teacher.json (metrics, batch "
        "size, learning rate), metrics.jsonl, events/ and config.yaml into --out. Resumes from "
        "--out/checkpoint.pt when present.")
    parser.epilog = f"dataset formats: {', '.join(sorted(FORMATS))}"
    parser.add_argument("--task", required=True, choices=sorted(TASK_BUILDERS))
    parser.add_argument("--data", metavar="FORMAT:ROOT", help="training data, e.g. world:DIR, imagefolder:DIR")
    parser.add_argument("--val", metavar="FORMAT:ROOT", help="validation data (same forms as --data)")
    parser.add_argument("--out", required=True, type=Path, help="output directory, e.g. runs/x/teachers/TASK")
    _config_argument(parser)
    _overrides_argument(parser)

    def run(args: argparse.Namespace) -> int:
        from must import config as config_lib
        from must.distributed import from_environment
        from must.stages.teach import TeachConfig, run_teach

        overrides = [f"task={args.task}", *_dataset_override("--data", "data", args.data),
                     *_dataset_override("--val", "val", args.val), *args.overrides]
        config = config_lib.load(TeachConfig, args.config, overrides)
        record = run_teach(config, args.out)
        if from_environment().is_main:  # under torchrun every rank returns the same record
            print(f"teacher '{record.task}' -> {args.out}: " +
                  ", ".join(f"{k}={v:.4f}" for k, v in record.metrics.items()))
        return 0

    return run


@verb("train")
def _train(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    parser.description = (
        "Train the multi-task student (MuST sec. 3.3-3.4) on datasets carrying real labels and the "
        "pseudo labels of `must label`, with the MuST loss weights from the teachers' recorded batch "
        "sizes and learning rates. Noisy Student options: randaugment.num_ops=2, "
        "model.drop_path_rate=0.2, tasks.classification.dropout=0.3. Several datasets: put "
        "`sources: [{data: {...}, pseudo: [...]}, ...]` in a --config YAML.")
    parser.add_argument("--teacher", action="append", default=[], metavar="DIR",
                        help="a teacher directory (repeat): the student's tasks and loss weights")
    parser.add_argument("--data", metavar="FORMAT:ROOT", help="the (unlabeled) image set that was labeled")
    parser.add_argument("--pseudo", action="append", default=[], metavar="DIR",
                        help="a `must label` output for --data (repeat)")
    parser.add_argument("--val", action="append", default=[], metavar="TASK=FORMAT:ROOT",
                        help="validation data with real labels for a task (repeat)")
    parser.add_argument("--init", metavar="CHECKPOINT", help="start from a checkpoint (ours, torchvision or timm)")
    parser.add_argument("--out", required=True, type=Path, help="output directory, e.g. runs/x/student")
    _config_argument(parser)
    _overrides_argument(parser)

    def run(args: argparse.Namespace) -> int:
        from must import config as config_lib
        from must.stages.student import StudentConfig, announce_student, run_student

        data = config_lib.read_yaml(args.config) if args.config else {}
        if args.teacher:
            data["teachers"] = [str(Path(t)) for t in args.teacher]
        if args.data:
            source = {"data": _dataset_spec("--data", args.data), "pseudo": list(args.pseudo)}
            data["sources"] = [*data.get("sources", []), source]
        for item in args.val:
            task, _, dataset = item.partition("=")
            if not task:
                raise ConfigError(f"--val expects TASK=FORMAT:ROOT, got '{item}'")
            data.setdefault("val", {})[task] = _dataset_spec("--val", dataset)
        if args.init:
            data.setdefault("model", {})["init"] = args.init
        config = config_lib.from_dict(StudentConfig, config_lib.apply_overrides(data, args.overrides))
        announce_student(args.out, run_student(config, args.out))
        return 0

    return run


@verb("report")
def _report(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    from must.report.cli import add_arguments, run

    add_arguments(parser)
    return run


@verb("label")
def _label(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    from must.label.cli import add_arguments, run

    add_arguments(parser)
    return run


@verb("transfer")
def _transfer(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    from must.transfer.cli import add_arguments, run

    add_arguments(parser)
    return run


@verb("pretrain")
def _pretrain(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    from must.stages.pretrain_cli import add_arguments, run

    add_arguments(parser)
    return run


@verb("predict")
def _predict(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    from must.predict.cli import add_arguments, run

    add_arguments(parser)
    return run


@verb("export")
def _export(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    from must.predict.export_cli import add_arguments, run

    add_arguments(parser)
    return run


@verb("demo")
def _demo(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    parser.description = (
        "Run the whole pipeline on the embedded procedural world: generate data, train teachers, "
        "pseudo-label the shared pool, train the student, transfer, report.")
    parser.add_argument("--preset", default="demo",
                        help="tiny (every stage in about two minutes; its numbers mean nothing), "
                             "demo (minutes on a CPU), study, paper, or a YAML path")
    parser.add_argument("--out", type=Path, default=Path("runs/demo"), help="run directory")
    _overrides_argument(parser)

    def run(args: argparse.Namespace) -> int:
        from must.stages.demo import run_demo

        return run_demo(args.preset, args.out, args.overrides)

    return run


def _not_built(name: str, issue: str) -> Callable[[argparse.ArgumentParser], Callable]:
    def builder(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
        parser.description = f"{name}: not built yet ({issue})."
        _overrides_argument(parser)

        def run(args: argparse.Namespace) -> int:
            print(f"must {name}: not built yet ({issue})", file=sys.stderr)
            return 2

        return run

    return builder


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, Callable[[argparse.Namespace], int]]]:
    from must import __version__

    parser = argparse.ArgumentParser(
        prog="must", description=__doc__.split("\n\n")[0] if __doc__ else None,
        epilog="Run 'must VERB --help' for a verb's options.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"must {__version__}")
    subparsers = parser.add_subparsers(dest="verb", metavar="VERB")
    runners = {}
    summaries = _summaries()
    for name in _verb_order():
        builder = VERBS.get(name) or _not_built(name, "a later issue")
        sub = subparsers.add_parser(name, help=summaries.get(name, ""),
                                    formatter_class=argparse.RawDescriptionHelpFormatter)
        runners[name] = builder(sub)
    return parser, runners


def _verb_order() -> list[str]:
    return ["world", "teach", "label", "train", "transfer", "report", "demo"] + sorted(
        set(VERBS) - {"world", "teach", "label", "train", "transfer", "report", "demo"})


def _summaries() -> dict[str, str]:
    return {
        "world": "generate a dataset of the procedural world",
        "teach": "train a single-task teacher (MuST sec. 3.1)",
        "label": "pseudo-label an image set with teachers (sec. 3.2)",
        "train": "train the multi-task student (sec. 3.3-3.4)",
        "transfer": "fine-tune checkpoints on downstream tasks, grid search (sec. 4)",
        "report": "write the HTML / Markdown / JSON report",
        "demo": "the whole pipeline on the embedded world",
        "pretrain": "self-supervised pre-training (SimCLR, pretext tasks, multi-task)",
        "bench": "run the benchmarks",
        "predict": "predict with a trained model: every task's files at source size",
        "export": "export a trained model to ONNX / TorchScript",
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser, runners = build_parser()
    args = parser.parse_args(argv)
    if args.verb is None:
        parser.print_help()
        return 0
    try:
        return runners[args.verb](args)
    except (ConfigError, FileNotFoundError, ValueError, KeyError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"must {args.verb}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"must {args.verb}: interrupted; outputs written so far are kept, rerun to resume",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
