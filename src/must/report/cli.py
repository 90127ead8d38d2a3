"""``must report RUN_DIR``: the command-line face of :func:`must.report.write_report`."""

from __future__ import annotations

import argparse
from pathlib import Path

from must.config import ConfigError

SUMMARY = "write the HTML / Markdown / JSON report"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Write RUN_DIR/report/: index.html (the paper's tables, training curves, a Figure-4 grid of "
        "the student's predictions), the same tables as report.md, and every number in results.json. "
        "Stages the run has not reached yet are left out with a note.")
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a run directory (runs/<name>)")
    parser.add_argument("--out", type=Path, default=None, help="output directory (default RUN_DIR/report)")
    parser.add_argument("--images", action="append", default=[], metavar="NAME=DIR",
                        help="an image folder for Figure 4, repeatable (default: the run's "
                             "data/pool and data/transfer, else rendered world images)")
    parser.add_argument("--figure-images", type=int, default=3, metavar="N",
                        help="images per source in Figure 4 (default 3)")
    parser.add_argument("--panel", type=int, default=192, help="Figure 4 panel side in pixels (default 192)")
    parser.add_argument("--device", default="cpu", help="torch device for Figure 4 (default cpu)")


def parse_sources(values: list[str]) -> dict[str, Path] | None:
    sources = {}
    for value in values:
        name, separator, folder = value.partition("=")
        if not separator or not name or not folder:
            raise ConfigError(f"--images '{value}' is not of the form NAME=DIR")
        sources[name] = Path(folder)
    return sources or None


def run(args: argparse.Namespace) -> int:
    from must.report.build import write_report

    if args.figure_images < 1 or args.panel < 32:
        raise ConfigError("--figure-images must be at least 1 and --panel at least 32")
    report = write_report(args.run_dir, args.out, args.device, args.figure_images,
                          parse_sources(args.images), args.panel)
    print(f"report: {report.html}")
    print(f"tables: {report.markdown}; numbers: {report.results_json}")
    for note in report.notes:
        print(f"  note: {note}")
    return 0
