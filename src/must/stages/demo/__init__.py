"""``must demo``: the whole MuST pipeline on the embedded procedural world.

generate data -> train the four teachers (sec. 3.1) -> pseudo-label the shared ``pool`` (sec. 3.2)
-> train the multi-task student (sec. 3.3-3.4) -> transfer every pre-training under comparison to
every downstream task (sec. 3.5) -> write the report. Everything lands in one run directory (the
README's layout); a stage whose outputs exist for the same config is skipped, so an interrupted
demo resumes where it stopped.

* :mod:`~must.stages.demo.config`         what to run: :class:`DemoConfig` and a plan per stage;
* :mod:`~must.stages.demo.stage_configs`  each stage's config assembled from it;
* :mod:`~must.stages.demo.progress`       the stage clock, resume and skip checks;
* :mod:`~must.stages.demo.pipeline`       the stages in order (:func:`run_demo`);
* :mod:`~must.stages.demo.summary`        the table printed at the end.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from must.stages.demo.config import (TEACHER_DOMAINS, DemoConfig, LabelPlan, StudentPlan, StudentVariant,
                                     TeacherPlan, TransferPlan)
from must.stages.demo.pipeline import run_demo, train_teachers
from must.stages.demo.progress import StageClock, already_done
from must.stages.demo.stage_configs import (label_config, pool_set, pretrain_config, student_config,
                                            teach_configs, transfer_inits, with_grid)
from must.stages.demo.summary import print_summary

__all__ = ["EXAMPLES", "SUMMARY", "TEACHER_DOMAINS", "DemoConfig", "LabelPlan", "StageClock", "StudentPlan",
           "StudentVariant", "TeacherPlan", "TransferPlan", "add_arguments", "already_done",
           "label_config", "pool_set", "pretrain_config", "print_summary", "run", "run_demo",
           "student_config", "teach_configs", "train_teachers", "transfer_inits", "with_grid"]

SUMMARY = "the whole pipeline on the embedded world"


EXAMPLES = """\
rows added to a finished run (its other stages are skipped, their rows kept):
  must demo 'pretrain.byol={method: byol, train: {steps: 120, batch_size: 32, lr: 0.05}}' \\
      'transfer.inits=[scratch,supervised,simclr,must,byol]'
  must demo 'students={must_equal: {weighting: equal}}' 'transfer.inits=[scratch,must,must_equal]'
  must demo transfer.knn=true                  # + k-NN of every row on the classification task
a row on another trunk, with its from-scratch reference (rows.<name>: model and transfer settings):
  must demo 'pretrain.mae={method: mae, train: {steps: 120, optimizer: adamw, lr: 0.001}}' \\
      'rows.mae={model: {backbone: "timm:vit_tiny_patch16_224"}, transfer: {lrs: [0.01]}}' \\
      'rows.scratch_vit={model: {backbone: "timm:vit_tiny_patch16_224"}, transfer: {lrs: [0.01]}}' \\
      'transfer.inits=[scratch,supervised,simclr,must,mae,scratch_vit]'
"""
"""``must demo --help``'s examples (a test loads each one)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Run the whole pipeline on the embedded procedural world: generate data, train teachers, "
        "pseudo-label the shared pool, train the student, transfer, report.")
    parser.add_argument("--preset", default="demo",
                        help="tiny (every stage in well under a minute; its numbers mean nothing), "
                             "demo (minutes on a CPU), study, paper, or a YAML path")
    parser.add_argument("--out", type=Path, default=Path("runs/demo"), help="run directory")
    parser.add_argument("overrides", nargs="*", metavar="key.sub=value",
                        help="config overrides, e.g. student.train.steps=640 model.width=0.5")
    parser.epilog = EXAMPLES


def run(args: argparse.Namespace) -> int:
    return run_demo(args.preset, args.out, args.overrides)
