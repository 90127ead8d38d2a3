"""Shared test set-up: one torch thread per pytest worker (tests run with ``-n 2`` on 2 cores),
no hub downloads, deterministic seeds; tests marked ``cuda`` are skipped on a machine without a
CUDA GPU (``make gpu-check`` runs them where there is one)."""

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest
import torch

torch.set_num_threads(1)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "no CUDA"
    skip = pytest.mark.skip(reason=f"needs a CUDA GPU: torch.cuda.is_available() is False "
                                   f"(torch {torch.__version__}, built with {build})")
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _a_new_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test is a new run: a warning shown once per run (``warn_once_per_run`` marks it in the
    environment) by an earlier test of this worker must not silence it here."""
    for key in [key for key in os.environ if key.startswith("MUST_WARNED_")]:
        monkeypatch.delenv(key)


def launch_torchrun(script: Path | str, *args: object, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``script *args`` in 2 processes through torchrun (gloo on CPU, one torch thread each; ``script``
    ``"-m"`` and a module name first in ``args`` run a module, e.g. ``must.cli``), a new
    run: none of an enclosing launch's rank variables, none of this process's once-per-run warning
    marks (a warning an earlier test gave must still come). Fails the test with the end of stderr
    unless both processes succeed."""
    environment = {k: v for k, v in os.environ.items()
                   if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK") and not k.startswith("MUST_WARNED_")}
    environment["OMP_NUM_THREADS"] = "1"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               str(script), *map(str, args)]
    run = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=timeout)
    if run.returncode != 0 and TEARDOWN_ABORT in run.stderr:
        # A rare native abort while a process exits, after the work is done (seen once in a full
        # suite run; not reproduced in 20 launches alone or under load): repeated once, and a
        # second failure fails the test.
        run = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=timeout)
    assert run.returncode == 0, run.stderr[-3000:]
    return run


TEARDOWN_ABORT = "terminate called without an active exception"
"""What libstdc++ prints when a thread object is destroyed while still joinable (here: in a torchrun
worker at exit, after it had written its results)."""


def launch_worker(source: str, directory: Path, timeout: float = 300) -> list[dict[str, Any]]:
    """Writes ``source`` to ``directory/worker.py``, runs it in 2 processes with ``directory`` as its
    argument (:func:`launch_torchrun`) and returns what each rank wrote to ``rank<r>.json`` there."""
    script = directory / "worker.py"
    script.write_text(source)
    launch_torchrun(script, directory, timeout=timeout)
    return [json.loads((directory / f"rank{rank}.json").read_text()) for rank in range(2)]


@pytest.fixture(scope="session")
def run_torchrun() -> Callable[..., subprocess.CompletedProcess[str]]:
    """:func:`launch_torchrun`, for the tests of real multi-process runs."""
    return launch_torchrun


@pytest.fixture(scope="session")
def run_worker() -> Callable[..., list[dict[str, Any]]]:
    """:func:`launch_worker`: a 2-process worker script and the JSON each rank wrote."""
    return launch_worker


class BrightestChannel(torch.utils.data.Dataset):
    """Eight random images whose class is their brightest channel: a classification set for
    engine runs of a few steps."""

    def __len__(self) -> int:
        return 8

    def __getitem__(self, index: int) -> Any:
        from must.data.sample import Sample

        image = torch.randint(0, 256, (3, 24, 24), generator=torch.Generator().manual_seed(index), dtype=torch.uint8)
        return Sample(str(index), image, {"classification": image.float().mean(dim=(1, 2)).argmax()})


class StopTraining(Exception):
    """Raised from a callback to stop a run at a chosen step, as a kill would."""
