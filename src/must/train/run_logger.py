"""What a training run reports: ``metrics.jsonl`` (one JSON object per log step and per
evaluation), TensorBoard events in ``events/``, and a tqdm progress bar. Main process only; so
are its warnings, once per run (:func:`warn_once_per_run`).

A resumed run first drops the records after its checkpoint's step (they were written by the
killed run and will be written again), and TensorBoard purges them too (``purge_step``).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path

from torch import Tensor
from tqdm import tqdm

from must.files import write_atomic

METRICS_NAME = "metrics.jsonl"
EVENTS_NAME = "events"


def warn_once_per_run(message: str, category: type[Warning] = UserWarning, stacklevel: int = 2) -> None:
    """Warns once per run rather than once per process and stage: only the main process (rank 0
    under torchrun) warns, and it marks the warning in its environment, which every process it
    starts afterwards (torchrun ranks, pool workers) inherits and then stays silent."""
    if int(os.environ.get("RANK", "0")) != 0:
        return
    marker = "MUST_WARNED_" + hashlib.sha1(message.encode()).hexdigest()[:12]
    if os.environ.get(marker):
        return
    os.environ[marker] = "1"
    warnings.warn(message, category, stacklevel=stacklevel + 1)


def truncate_records(path: Path, last_step: int) -> None:
    """Keeps the records of ``path`` with ``step <= last_step`` (rewritten atomically)."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # a line cut short by a kill
            continue
        if record.get("step", 0) <= last_step:
            kept.append(line)
    write_atomic(path, "".join(line + "\n" for line in kept))


class RunLogger:
    """Averages losses over each window of ``log_every`` steps and writes them out."""

    def __init__(self, out_dir: Path, start_step: int, total_steps: int, log_every: int, *,
                 resumed: bool, enabled: bool, progress: bool = True) -> None:
        self.enabled, self.total_steps, self.log_every = enabled, total_steps, log_every
        self.sums: dict[str, Tensor | float] = {}
        self.counts: dict[str, float] = {}
        self.images, self.window_start = 0, time.perf_counter()
        self.last_losses: dict[str, float] = {}
        if not enabled:
            return
        from torch.utils.tensorboard import SummaryWriter  # slow import: main process only

        out_dir.mkdir(parents=True, exist_ok=True)
        self.path = out_dir / METRICS_NAME
        if resumed:
            truncate_records(self.path, start_step)
        self.file = self.path.open("a")
        self.writer = SummaryWriter(str(out_dir / EVENTS_NAME), purge_step=start_step if resumed else None)
        self.bar = tqdm(total=total_steps, initial=start_step, disable=not progress, dynamic_ncols=True,
                        desc="train")
        self.window_start = time.perf_counter()  # not counting the set-up above

    def add_losses(self, total: Tensor, losses: Mapping[str, Mapping[str, Tensor]], weight: float) -> None:
        """Adds one micro-batch's losses, ``weight`` = its share of the step (1 / accumulate)."""
        if not self.enabled:
            return
        self._add("loss", total, weight)
        for task, parts in losses.items():
            for part, value in parts.items():
                self._add(f"loss/{task}" if part == "loss" else f"loss/{task}/{part}", value, weight)

    def _add(self, key: str, value: Tensor, weight: float) -> None:
        value = value.detach().float() * weight  # stays a tensor: no host sync until logged
        self.sums[key] = self.sums.get(key, 0.0) + value
        self.counts[key] = self.counts.get(key, 0.0) + weight

    def step_done(self, step: int, images: int, lr: float, weights: Callable[[], Mapping[str, float]]) -> None:
        """Counts a finished step; on log steps writes the window's means (``weights`` is only
        called then: reading learned weights syncs with the device)."""
        if not self.enabled:
            return
        self.images += images
        self.bar.update(1)
        if step % self.log_every and step != self.total_steps:
            return
        elapsed = max(time.perf_counter() - self.window_start, 1e-9)
        losses = {key: float(self.sums[key]) / self.counts[key] for key in self.sums}
        record = {"step": step, "lr": lr, **losses, **{f"weight/{k}": float(v) for k, v in weights().items()},
                  "images_per_second": self.images / elapsed}
        self._write(step, record)
        self.bar.set_postfix(loss=f"{losses.get('loss', float('nan')):.4f}",
                             img_s=f"{record['images_per_second']:.1f}")
        self.last_losses = losses
        self.sums, self.counts, self.images = {}, {}, 0
        self.window_start = time.perf_counter()

    def evaluation(self, step: int, results: Mapping[str, float]) -> None:
        if self.enabled:
            self._write(step, {"step": step, **{f"eval/{k}": float(v) for k, v in results.items()}})

    def _write(self, step: int, record: dict[str, float]) -> None:
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        for key, value in record.items():
            if key != "step":
                self.writer.add_scalar(key, value, step)

    def flush(self) -> None:
        if self.enabled:
            self.file.flush()
            os.fsync(self.file.fileno())
            self.writer.flush()

    def close(self) -> None:
        if self.enabled:
            self.bar.close()
            self.file.close()
            self.writer.close()
