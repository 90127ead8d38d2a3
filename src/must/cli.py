"""The ``must`` command line: one verb per pipeline stage, each a thin layer over library code.

    must world DOMAIN --out DIR        generate a dataset of the procedural world
    must teach  --task T ...           train a single-task teacher          (MuST sec. 3.1)
    must label  ...                    pseudo-label a shared image set       (MuST sec. 3.2)
    must train  ...                    train the multi-task student          (MuST sec. 3.3-3.4)
    must transfer ...                  fine-tune checkpoints on downstream tasks (sec. 4)
    must pretrain --method M ...       self-supervised pre-training (SimCLR, pretext tasks)
    must report ...                    write the HTML / Markdown / JSON report
    must demo                          all of the above on the embedded world
    must predict --model DIR ...       a trained model's outputs on new images, at source size
    must export --model DIR ...        ONNX / TorchScript of a trained model

Every verb's module has the same three names: ``SUMMARY`` (one line), ``add_arguments(parser)``
and ``run(args) -> exit code``. A stage of one or two files keeps its verb in ``must/stages/``; a
stage with a library of its own has a ``cli.py`` in its package. Stage settings are frozen
dataclass configs: ``--config PRESET`` plus ``key.sub=value`` overrides after the flags.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from must.errors import MustError
from must.label import cli as label
from must.predict import cli as predict
from must.predict import export_cli as export
from must.report import cli as report
from must.stages import demo, pretrain, student, teach
from must.transfer import cli as transfer
from must.world import cli as world

VERBS = {
    "world": world,
    "teach": teach,
    "label": label,
    "train": student,
    "transfer": transfer,
    "report": report,
    "demo": demo,
    "pretrain": pretrain,
    "predict": predict,
    "export": export,
}
"""Verb name -> its module, in the order ``must --help`` lists them."""


def build_parser() -> argparse.ArgumentParser:
    from must import __version__

    parser = argparse.ArgumentParser(
        prog="must", description=__doc__.split("\n\n")[0] if __doc__ else None,
        epilog="Run 'must VERB --help' for a verb's options.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"must {__version__}")
    subparsers = parser.add_subparsers(dest="verb", metavar="VERB")
    for name, module in VERBS.items():
        module.add_arguments(subparsers.add_parser(
            name, help=module.SUMMARY, formatter_class=argparse.RawDescriptionHelpFormatter))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.verb is None:
        parser.print_help()
        return 0
    try:
        return VERBS[args.verb].run(args)
    except (MustError, FileNotFoundError) as error:  # what a user can cause; a bug stays a traceback
        print(f"must {args.verb}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"must {args.verb}: interrupted; outputs written so far are kept, rerun to resume",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
