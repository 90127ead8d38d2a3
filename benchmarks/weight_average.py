"""The training weight average (``train.ema_decay``) on a student with a momentum task (BYOL): the
update time of :class:`must.train.weight_average.TrainedWeightAverage` (trained weights and their
BN statistics averaged, frozen state copied) against torch's ``AveragedModel(use_buffers=True)``
(everything averaged), paired rounds in shuffled order, and how far each one's copy of the
momentum target is from the live target after a few steps. Written to
``docs/measurements/weight_average.json``::

    python -m benchmarks.weight_average
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from benchmarks.common import (command_line, four_tasks, interleave, model_config, quartiles, ratio_summary,
                               run_stamp, timed)
from must.models import ModelConfig, build_model
from must.tasks.self_supervised import BYOLTask
from must.train.weight_average import TrainedWeightAverage, split_trained_state

DECAY = 0.99
CONFIGS = {"demo_resnet18": model_config(), "resnet50_fpn256": model_config("resnet50", 1.0, 256)}


def one_training_step(model: nn.Module, step: int) -> None:
    """What an optimizer step changes, without the forward / backward: the trained weights, and
    the momentum target following them (BYOL sec. 3.2)."""
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.add_(torch.randn_like(parameter), alpha=1e-3)
    model.heads["byol"].after_optimizer_step(step, 100)


def measure(config: ModelConfig, rounds: int, updates: int) -> dict[str, Any]:
    torch.manual_seed(0)
    model = build_model(config, {**four_tasks(), "byol": BYOLTask()}).train()
    model.heads["byol"].start()
    averages = {"all_averaged": AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(DECAY), use_buffers=True),
                "trained_averaged": TrainedWeightAverage(model, DECAY)}
    for step in range(1, 4):  # a few steps: the target moves away from its first copy
        one_training_step(model, step)
        for average in averages.values():
            average.update_parameters(model)
    live = model.heads["byol"].target_backbone.state_dict()
    target_gap = {name: max(float((average.module.heads["byol"].target_backbone.state_dict()[key].float()
                                   - value.float()).abs().max()) for key, value in live.items())
                  for name, average in averages.items()}

    def updates_of(average: nn.Module) -> None:
        for _ in range(updates):
            average.update_parameters(model)

    times = interleave({name: timed(lambda average=average: updates_of(average))
                        for name, average in averages.items()}, rounds, warmup=1, shuffle_seed=0)
    averaged, copied = split_trained_state(averages["trained_averaged"].module, model)
    return {"model": {"backbone": config.backbone, "width": config.width, "fpn_channels": config.fpn_channels},
            "tasks": [*four_tasks(), "byol"],
            "ms_per_update": {name: {key: 1000 * value / updates for key, value in quartiles(values).items()}
                              for name, values in times.items()},
            "trained_over_all": ratio_summary(times, "trained_averaged", "all_averaged"),
            "elements_averaged": sum(ema.numel() for ema, _ in averaged),
            "elements_copied": sum(ema.numel() for ema, _ in copied),
            "target_max_abs_gap_after_3_steps": target_gap}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--updates", type=int, default=10, help="updates timed per round")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--result", type=Path,
                        default=Path(__file__).resolve().parents[1] / "docs/measurements/weight_average.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = {}
    for name, config in CONFIGS.items():
        rows[name] = measure(config, args.rounds, args.updates)
        shown = ("ms_per_update", "target_max_abs_gap_after_3_steps")
        print(name, json.dumps({key: rows[name][key] for key in shown}), flush=True)
    result = {**run_stamp(), "command": command_line("benchmarks.weight_average"), "decay": DECAY, "rows": rows}
    args.result.parent.mkdir(parents=True, exist_ok=True)
    args.result.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
