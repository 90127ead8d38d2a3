"""The one place for devices and processes (STYLE.md, practice 6).

Reads torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK), initializes the process group
(gloo on CPU, NCCL on CUDA), and answers rank / world-size / main-process questions. Code
elsewhere gets a ``torch.device`` passed in and never calls ``.cuda()``.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class ProcessInfo:
    rank: int
    world_size: int
    local_rank: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def from_environment() -> ProcessInfo:
    """What torchrun told this process (a single process when run without torchrun)."""
    return ProcessInfo(
        rank=int(os.environ.get("RANK", 0)),
        world_size=int(os.environ.get("WORLD_SIZE", 1)),
        local_rank=int(os.environ.get("LOCAL_RANK", 0)),
    )


def pick_device(name: str = "auto", local_rank: int | None = None) -> torch.device:
    """``auto`` -> this rank's CUDA device when CUDA is available, else CPU; or an explicit name."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and device.index is None:
        index = from_environment().local_rank if local_rank is None else local_rank
        device = torch.device("cuda", index)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device


def setup(device: torch.device | None = None, timeout_minutes: float = 30.0) -> ProcessInfo:
    """Joins torchrun's process group when launched by torchrun; no-op for one process."""
    info = from_environment()
    if info.distributed and not dist.is_initialized():
        backend = "nccl" if device is not None and device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=timeout_minutes))
    return info


def teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if is_initialized() else 1


def is_main_process() -> bool:
    return rank() == 0


def barrier() -> None:
    if is_initialized():
        dist.barrier()


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """Mean of ``tensor`` over all ranks (returns the input unchanged for one process)."""
    if not is_initialized():
        return tensor
    tensor = tensor.clone()
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor / world_size()


def all_gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenates ``tensor`` from all ranks along dim 0, keeping gradients for the local part.

    Contrastive losses (SimCLR's NT-Xent) need negatives from every rank; gradients flow back only
    through this rank's slice, which is the standard practice (e.g. lightly, SimCLR's TPU code).
    """
    if not is_initialized():
        return tensor
    gathered = [torch.zeros_like(tensor) for _ in range(world_size())]
    dist.all_gather(gathered, tensor.contiguous())
    gathered[rank()] = tensor
    return torch.cat(gathered, dim=0)


def broadcast_object(value: object, source: int = 0) -> object:
    if not is_initialized():
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=source)
    return holder[0]


@contextlib.contextmanager
def main_process_first() -> Iterator[None]:
    """Lets rank 0 do a step (e.g. write data) before the other ranks read its result."""
    if not is_main_process():
        barrier()
    yield
    if is_main_process():
        barrier()
