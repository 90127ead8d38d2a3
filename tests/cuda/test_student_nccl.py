"""The multi-task student (MuST sec. 3.3-3.4) trained through DDP on a one-process NCCL group:
the gradient all-reduce, the non-finite check, the RNG gather of the checkpoint and the metrics'
sync all run NCCL collectives as they do on N GPUs, and the run starts where the same run without
a process group starts."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from must import distributed
from must.stages.demo import TEACHER_DOMAINS
from must.stages.student import run_student

from ..stages.conftest import STUDENT_TRAIN, read_jsonl, student_config
from .conftest import CUDA_GROUP, all_finite

pytestmark = [pytest.mark.cuda, pytest.mark.xdist_group(CUDA_GROUP)]

FIRST_STEP_RTOL = 1e-3
"""Same weights, batch and seeds: the first step's forward differs at most by kernel choice; later
steps may sample other detection proposals (they follow the scores), so only their finiteness is
compared."""


def test_student_trains_through_ddp_on_a_one_process_nccl_group(
        cuda_device: torch.device, world: Path, teachers: dict[str, Path], pseudo: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    config = student_config(world, list(teachers.values()), pseudo,
                            train=dataclasses.replace(STUDENT_TRAIN, device=str(cuda_device)))
    alone = run_student(config, tmp_path / "alone")

    wrapped: list[torch.nn.Module] = []
    data_parallel = distributed.data_parallel

    def recording(*arguments, **options):  # type: ignore[no-untyped-def]
        wrapped.append(data_parallel(*arguments, **options))
        return wrapped[-1]

    monkeypatch.setattr(distributed, "data_parallel", recording)
    dist.init_process_group(distributed.backend(cuda_device), init_method=f"file://{tmp_path / 'store'}",
                            rank=0, world_size=1)
    try:
        # Host tensors keep a backend under NCCL (a metric may gather what it keeps on the CPU).
        assert distributed.all_reduce_mean(torch.tensor([2.0])).tolist() == [2.0]
        assert distributed.all_reduce_mean(torch.tensor([2.0], device=cuda_device)).tolist() == [2.0]
        assert distributed.broadcast_object({"rank": 0}) == {"rank": 0}
        ddp = run_student(config, tmp_path / "ddp")
    finally:
        distributed.teardown()

    assert wrapped and all(isinstance(model, DistributedDataParallel) for model in wrapped)
    assert wrapped[0].device_ids == [cuda_device.index]
    assert set(ddp) == set(alone) == set(TEACHER_DOMAINS)
    for task in TEACHER_DOMAINS:
        assert ddp[task].keys() == alone[task].keys() and all_finite(ddp[task]), (task, ddp[task])
    runs = [[line for line in read_jsonl(tmp_path / run / "metrics.jsonl") if "lr" in line]
            for run in ("alone", "ddp")]
    assert [line["step"] for line in runs[0]] == [line["step"] for line in runs[1]] == [1, 2, 3]
    for task in TEACHER_DOMAINS:
        first_alone, first_ddp = runs[0][0][f"loss/{task}"], runs[1][0][f"loss/{task}"]
        assert abs(first_ddp - first_alone) <= FIRST_STEP_RTOL * abs(first_alone), (task, first_ddp, first_alone)
        assert all_finite({str(line["step"]): line[f"loss/{task}"] for line in runs[1]}), task
