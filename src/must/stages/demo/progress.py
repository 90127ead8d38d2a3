"""How ``must demo`` runs its stages: each timed into ``timings.json`` with a line saying whether it
starts, resumes or is skipped, and the check that a stage's outputs belong to this config (an
interrupted demo resumes where it stopped; another config's run is refused).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import yaml

from must import config as config_lib
from must.files import CHECKPOINT_NAME


class StageClock:
    """Times each stage into ``timings.json`` (report: seconds per stage)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.timings: dict[str, float] = json.loads(path.read_text()) if path.exists() else {}

    def run(self, name: str, action: Callable[[], Any], finished: bool = False, status: str = "") -> Any:
        """Runs and times ``action``, first printing the stage and its ``status`` (starting,
        resuming from where). A stage that was ``finished`` before (it only checks its outputs)
        keeps the time recorded when it did its work."""
        start = time.perf_counter()
        print(f"\n== {name}" + (f": {status}" if status else ""), flush=True)
        result = action()
        elapsed = time.perf_counter() - start
        if not finished or name not in self.timings:
            self.timings[name] = round(elapsed, 2)
        self.path.write_text(json.dumps(self.timings, indent=2))
        return result


SKIPPED = "skipped, {out} holds its finished outputs for this config"


def skipped(name: str, out: Path) -> None:
    """Says that a training stage is not run again: its outputs in ``out`` are this config's."""
    print(f"\n== {name}: {SKIPPED.format(out=out)}", flush=True)


def training_status(out: Path, steps: int) -> str:
    """Whether a training stage starts afresh or resumes its checkpoint (the engine resumes it
    exactly), and from which step."""
    checkpoint = out / CHECKPOINT_NAME
    if not checkpoint.exists():
        return f"starting ({steps} steps) in {out}"
    step = torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True)["step"]
    return f"resuming at step {step} of {steps} from {checkpoint}"


def transfer_status(configs: Sequence[Any], out: Path) -> str:
    """How many grid cells of the transfer stage are finished already (they are only read)."""
    from must.transfer.grid import grid_cells, read_result

    cells = [(config.init_name, cell) for config in configs for name, task in config.tasks.items()
             for cell in grid_cells(name, task.lrs, task.steps, config.mode)]
    done = sum(read_result(cell.directory(out / "transfer" / init / cell.task)) is not None for init, cell in cells)
    if not done:
        return f"starting {len(cells)} grid cells"
    return f"{done} of {len(cells)} grid cells finished before, resuming the rest"


def already_done(out: Path, marker: str, config: Any) -> bool:
    """True when ``out`` holds ``marker`` and a ``config.yaml`` equal to ``config`` but for progress
    bars (on or off, e.g. teachers trained one after another or in a pool, it is the same run).

    False for a fresh or interrupted stage (same config: the engine resumes it). A directory whose
    checkpoint was trained with another config raises :class:`~must.config.ConfigError`: the engine
    would continue that checkpoint under the new config (a mix of both runs), and training it anew
    would lose it."""
    saved = out / "config.yaml"
    if not saved.exists():
        return False
    wanted = _without_progress(yaml.safe_load(yaml.safe_dump(config_lib.to_dict(config))))
    differing = config_lib.differing_keys(_without_progress(yaml.safe_load(saved.read_text())), wanted)
    if differing and (out / CHECKPOINT_NAME).exists():
        raise config_lib.ConfigError(
            f"{out} holds a run of another config (differs in {', '.join(differing)}); delete it or "
            "use another --out to train it anew")
    return not differing and (out / marker).exists()


def _without_progress(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _without_progress(item) for key, item in value.items() if key != "progress"}
    return value
