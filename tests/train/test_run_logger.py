"""The run's metrics.jsonl: records past a resumed checkpoint are dropped, cut lines skipped."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from must.train.run_logger import truncate_records


def test_truncate_keeps_records_up_to_the_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    lines = [json.dumps({"step": s, "loss": 1.0 / s}) for s in (2, 4, 6, 8)]
    path.write_text("\n".join(lines) + '\n{"step": 10, "lo')  # the last line was cut by a kill
    truncate_records(path, 4)
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [2, 4]
    truncate_records(tmp_path / "missing.jsonl", 3)  # nothing to do


WARNS = ("import sys, subprocess, torch\n"
         "from must.train.engine import resolve_precision\n"
         "for stage in range(2): resolve_precision('bf16', torch.device('cpu'))\n"
         "if len(sys.argv) > 1:  # a process it starts afterwards (torchrun rank, pool worker)\n"
         "    subprocess.run([sys.executable, '-c', sys.argv[1]], check=True)\n")


@pytest.mark.parametrize("rank, shown", [(None, 1), ("1", 0)])
def test_a_warning_shows_once_per_run(rank: str | None, shown: int) -> None:
    """The bf16-on-CPU warning: once in the main process (not once per stage), never in another
    rank, never again in a process it starts."""
    environment = {key: value for key, value in os.environ.items()
                   if key != "RANK" and not key.startswith("MUST_WARNED_")}
    if rank is not None:
        environment["RANK"] = rank
    result = subprocess.run([sys.executable, "-c", WARNS, WARNS], env=environment, capture_output=True,
                            text=True, check=True)
    assert result.stderr.count("UserWarning: bf16 autocast on CPU") == shown, result.stderr
