"""Grid bookkeeping: cell names, choosing by validation only, grid.jsonl keeping the other mode's
lines, identities refusing a changed config, rank striding."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from must.config import ConfigError
from must.transfer.grid import (Cell, best_cell_directory, best_name, check_identity, for_rank, grid_cells,
                                select_best, write_grid)


def test_cells_in_grid_order_with_distinct_directories() -> None:
    cells = grid_cells("depth", (0.1, 0.05), (100, 200), "finetune")
    assert [(c.lr, c.steps) for c in cells] == [(0.1, 100), (0.1, 200), (0.05, 100), (0.05, 200)]
    assert cells[0].directory(Path("t")) == Path("t/cells/lr0.1-steps100")
    assert Cell("depth", 0.1, 100, "linear").directory_name == "lr0.1-steps100-linear"
    assert best_name("finetune") == "best.json" and best_name("linear") == "best_linear.json"


def test_best_is_the_val_argmax_never_the_test_argmax() -> None:
    records = [{"val_value": 0.2, "value": 0.9}, {"val_value": 0.5, "value": 0.1},
               {"val_value": math.nan, "value": 1.0}, {"val_value": 0.5, "value": 0.3}]
    best = select_best(records)
    assert best == records[1]  # highest val; a tie goes to the earlier cell; NaN never wins
    with pytest.raises(ValueError):
        select_best([])


def test_write_grid_keeps_the_other_modes_lines(tmp_path: Path) -> None:
    linear = [{"mode": "linear", "lr": 0.1, "val_value": 0.3, "value": 0.2}]
    finetune = [{"mode": "finetune", "lr": 0.1, "val_value": 0.4, "value": 0.5},
                {"mode": "finetune", "lr": 0.2, "val_value": 0.6, "value": 0.4}]
    write_grid(tmp_path, linear, "linear")
    best = write_grid(tmp_path, finetune, "finetune")
    lines = [json.loads(line) for line in (tmp_path / "grid.jsonl").read_text().splitlines()]
    assert lines == linear + finetune
    assert best == finetune[1] == json.loads((tmp_path / "best.json").read_text())
    assert json.loads((tmp_path / "best_linear.json").read_text()) == linear[0]
    write_grid(tmp_path, finetune[:1], "finetune")  # a rewrite replaces this mode's lines only
    assert len((tmp_path / "grid.jsonl").read_text().splitlines()) == 2


def test_best_cell_directory_is_the_chosen_cell(tmp_path: Path) -> None:
    assert best_cell_directory(tmp_path) is None  # no grid finished yet
    records = [{"task": "normals", "mode": "finetune", "lr": lr, "steps": 200, "val_value": v, "value": v}
               for lr, v in ((0.02, 0.3), (0.05, 0.4))]
    write_grid(tmp_path, records, "finetune")
    assert best_cell_directory(tmp_path) == Cell("normals", 0.05, 200).directory(tmp_path)
    write_grid(tmp_path, [{**records[0], "mode": "linear"}], "linear")
    assert best_cell_directory(tmp_path, "linear") == tmp_path / "cells" / "lr0.02-steps200-linear"


def test_identity_is_recorded_then_enforced(tmp_path: Path) -> None:
    check_identity(tmp_path, {"lr": 0.1, "model": {"width": 0.25}})
    check_identity(tmp_path, {"lr": 0.1, "model": {"width": 0.25}})
    with pytest.raises(ConfigError, match="model"):
        check_identity(tmp_path, {"lr": 0.1, "model": {"width": 0.5}})


def test_ranks_split_cells_without_overlap() -> None:
    cells = grid_cells("t", (1.0, 2.0, 3.0), (1, 2), "finetune")
    parts = [for_rank(cells, rank, 4) for rank in range(4)]
    assert sorted((c for part in parts for c in part), key=cells.index) == cells
    assert parts[1] == [cells[1], cells[5]]
