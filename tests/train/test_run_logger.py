"""The run's metrics.jsonl: records past a resumed checkpoint are dropped, cut lines skipped."""

from __future__ import annotations

import json
from pathlib import Path

from must.train.run_logger import truncate_records


def test_truncate_keeps_records_up_to_the_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    lines = [json.dumps({"step": s, "loss": 1.0 / s}) for s in (2, 4, 6, 8)]
    path.write_text("\n".join(lines) + '\n{"step": 10, "lo')  # the last line was cut by a kill
    truncate_records(path, 4)
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [2, 4]
    truncate_records(tmp_path / "missing.jsonl", 3)  # nothing to do
