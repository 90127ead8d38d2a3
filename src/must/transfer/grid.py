"""The grid search of MuST supp. sec. 2.3: every (learning rate, training steps) cell trained,
every cell reported, each model's best cell chosen on validation data and reported on test.

Files of one task (``<out>/transfer/<init>/<task>/``)::

    cells/lr<lr>-steps<steps>[-linear]/   one engine run per cell (checkpoint.pt, metrics.jsonl)
        cell.json                         what the cell is (its identity: config, init file hash)
        result.json                       its scores, written last: present = finished
    grid.jsonl                            one line per finished cell, in grid order
    best.json / best_linear.json          the line of the cell with the highest ``val_value``

A cell is a pure function of its identity, so cells can run in any order, in any process, and a
finished one is skipped on a rerun; a cell whose directory holds another identity is refused.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from must.config import ConfigError, differing_keys
from must.distributed import Job
from must.files import write_atomic

RESULT_NAME = "result.json"
IDENTITY_NAME = "cell.json"
GRID_NAME = "grid.jsonl"
RECORD_FIELDS = ("init", "task", "metric", "lr", "steps", "mode", "val_value", "value", "seconds")
"""The fields of a grid line, in order (the report reads them)."""


@dataclass(frozen=True)
class Cell:
    """One grid cell of one downstream task."""

    task: str
    """The downstream task's name in the suite (its directory)."""
    lr: float
    steps: int
    mode: str = "finetune"

    @property
    def directory_name(self) -> str:
        suffix = "-linear" if self.mode == "linear" else ""
        return f"lr{self.lr:g}-steps{self.steps}{suffix}"

    def directory(self, task_dir: Path) -> Path:
        return task_dir / "cells" / self.directory_name


def grid_cells(task: str, lrs: Sequence[float], steps: Sequence[int], mode: str) -> list[Cell]:
    """The cells of one task in grid order: learning rates outer, steps inner."""
    return [Cell(task, float(lr), int(count), mode) for lr in lrs for count in steps]


def best_name(mode: str) -> str:
    """``best.json`` for fine-tuning; the linear probe's best lives beside it."""
    return "best.json" if mode == "finetune" else f"best_{mode}.json"


def json_text(data: Any) -> str:
    """The text of the grid's JSON files (cell identity, results, best choice)."""
    return json.dumps(data, indent=2) + "\n"


def check_identity(directory: Path, identity: Mapping[str, Any]) -> None:
    """Records ``identity`` in a new cell directory; refuses one made for another identity."""
    path = directory / IDENTITY_NAME
    if path.exists():
        found = json.loads(path.read_text())
        if found != identity:
            changed = differing_keys(found, identity)
            raise ConfigError(f"{directory} holds a grid cell made with another config (differs in: "
                              f"{', '.join(changed)}); use another --out or --name, or delete it")
        return
    write_atomic(path, json_text(dict(identity)))


def read_result(directory: Path) -> dict[str, Any] | None:
    """A finished cell's line, or None when it has not finished."""
    path = directory / RESULT_NAME
    if not path.exists():
        return None
    return json.loads(path.read_text())


def _rank_value(record: Mapping[str, Any]) -> float:
    value = record.get("val_value")
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else -math.inf


def select_best(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The record with the highest ``val_value`` (every primary metric is higher-is-better);
    ties go to the earlier cell in grid order. Test values never take part in the choice."""
    if not records:
        raise ValueError("no grid cell to choose from")
    best = max(range(len(records)), key=lambda index: (_rank_value(records[index]), -index))
    return dict(records[best])


def best_cell_directory(task_dir: Path, mode: str = "finetune") -> Path | None:
    """The directory of the cell ``best.json`` (``best_<mode>.json``) chose, or None when that
    file is missing or unreadable (a task whose grid has not finished)."""
    try:
        best = json.loads((task_dir / best_name(mode)).read_text())
        cell = Cell(str(best["task"]), float(best["lr"]), int(best["steps"]), str(best.get("mode", mode)))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return cell.directory(task_dir)


def write_grid(task_dir: Path, records: Sequence[Mapping[str, Any]], mode: str) -> dict[str, Any]:
    """Writes ``grid.jsonl`` (this mode's ``records`` in grid order, after the lines of the other
    mode already there) and this mode's best file; returns the best record."""
    path = task_dir / GRID_NAME
    kept: list[str] = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                if json.loads(line).get("mode") != mode:
                    kept.append(line)
            except json.JSONDecodeError:
                continue
    lines = kept + [json.dumps(dict(record)) for record in records]
    write_atomic(path, "".join(line + "\n" for line in lines))
    best = select_best(records)
    write_atomic(task_dir / best_name(mode), json_text(best))
    return best


def for_rank(cells: Sequence[Job], rank: int, world_size: int) -> list[Job]:
    """Rank ``r`` of ``N`` takes cells ``r, r + N, ...`` (torchrun without a process group: cells
    are independent, so ranks never wait for each other)."""
    return list(cells[rank::world_size])
