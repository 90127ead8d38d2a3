"""The one place for devices and processes.

Reads torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK), initializes the process group
(gloo on CPU; NCCL, with gloo for host tensors, on CUDA), and answers rank / world-size /
main-process questions; ``launch`` starts a ``must`` verb under torchrun from a process that is
not distributed itself; ``run_pool`` runs independent jobs (transfer grid cells, teachers) in a
pool of one-thread processes. Every choice that depends on the device is made here: which device
(:func:`pick_device`), the collective backend, DDP's wrapping (:func:`data_parallel`), pinned
host memory (:func:`pins_memory`) and whether bf16 is native (:func:`native_bf16`). Code
elsewhere gets a ``torch.device`` passed in and never calls ``.cuda()``.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import subprocess
import sys
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from multiprocessing import get_context
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from must.config import ConfigError


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


def process_count(requested: int) -> int:
    """``requested`` processes capped at one GPU each on CUDA, one core each on CPU."""
    available = torch.cuda.device_count() if torch.cuda.is_available() else (os.cpu_count() or 1)
    return max(1, min(requested, available))


def launch(arguments: Sequence[str], processes: int) -> None:
    """``torchrun --standalone --nproc_per_node=processes -m must.cli ARGUMENTS``, with this
    process's torch threads split among the ranks; their output goes to this process's. Raises,
    naming the command, when it fails."""
    environment = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    environment["OMP_NUM_THREADS"] = str(max(1, torch.get_num_threads() // processes))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={processes}", "-m", "must.cli", *arguments]
    result = subprocess.run(command, env=environment, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"a {processes}-process run failed (exit code {result.returncode}; its "
                           f"output is above): {' '.join(command)}")


def pick_device(name: str = "auto", local_rank: int | None = None) -> torch.device:
    """``auto`` -> this rank's CUDA device when CUDA is available, else CPU; or an explicit name
    (``cpu``, ``cuda``, ``cuda:1``). A name that is no device, or a CUDA device this machine does
    not have, is a :class:`~must.config.ConfigError` naming it (not torch's traceback)."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"device '{name}': not a device name; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and device.index is None:
        index = from_environment().local_rank if local_rank is None else local_rank
        device = torch.device("cuda", index)
    if device.type == "cuda":
        _check_cuda(name, device)
        torch.cuda.set_device(device)
    return device


def _check_cuda(name: str, device: torch.device) -> None:
    if not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "no CUDA"
        raise ConfigError(f"device '{name}': no CUDA GPU is visible (torch {torch.__version__}, built "
                          f"with {build}); use device=cpu or device=auto")
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(f"device '{name}': this machine has {torch.cuda.device_count()} CUDA "
                          f"device(s), cuda:0 to cuda:{torch.cuda.device_count() - 1}")


def backend(device: torch.device | None) -> str:
    """The process group's backend: gloo on CPU; on CUDA NCCL for device tensors plus gloo for
    host ones, so a collective on a tensor kept on the CPU (a metric's gathered predictions, an
    object gather) works under NCCL too instead of failing with "No backend type associated with
    device type cpu"."""
    return "cpu:gloo,cuda:nccl" if device is not None and device.type == "cuda" else "gloo"


def data_parallel(model: nn.Module, device: torch.device, find_unused_parameters: bool = False) -> nn.Module:
    """``model`` in DDP when a process group is up, else ``model`` itself. Any group size counts:
    a one-process NCCL group then runs the very gradient path of N GPUs, so one GPU can test it."""
    if not is_initialized():
        return model
    device_ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids, find_unused_parameters=find_unused_parameters)


def pins_memory(device: torch.device | None) -> bool:
    """Whether batches bound for ``device`` go through page-locked host memory: only a CUDA copy
    gains from it (asynchronous, ``non_blocking=True``)."""
    return device is not None and device.type == "cuda"


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 in hardware: CUDA compute capability 8.0 (Ampere) and up,
    or ROCm. Older GPUs only emulate it, slower than fp32; on CPU see
    :func:`must.train.engine.resolve_precision`."""
    if device.type != "cuda":
        return False
    return bool(torch.version.hip) or torch.cuda.get_device_capability(device)[0] >= 8


def setup(device: torch.device | None = None, timeout_minutes: float = 30.0) -> ProcessInfo:
    """Joins torchrun's process group when launched by torchrun; no-op for one process."""
    info = from_environment()
    if info.distributed and not dist.is_initialized():
        dist.init_process_group(backend=backend(device), timeout=datetime.timedelta(minutes=timeout_minutes))
    return info


@contextlib.contextmanager
def joined_group(device: torch.device | None = None, timeout_minutes: float = 30.0) -> Iterator[None]:
    """Joins torchrun's process group for the duration when launched by torchrun and nobody has
    joined it yet (a verb run alone), and leaves it afterwards; inside a caller's group, nothing."""
    owns = from_environment().distributed and not dist.is_initialized()
    if owns:
        setup(device, timeout_minutes)
    try:
        yield
    finally:
        if owns:
            teardown()


def teardown() -> None:
    global _GATHER_GROUP
    if dist.is_available() and dist.is_initialized():
        dist.barrier()  # no rank tears gloo down while another still has work in flight
        dist.destroy_process_group()  # destroys every group, the gather group included
    _GATHER_GROUP = None


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
    """Concatenates ``tensor`` from all ranks along dim 0, with the exact gradient.

    Contrastive losses (SimCLR's NT-Xent) need negatives from every rank, and each rank's rows
    are also candidates in the other ranks' losses. The backward pass therefore sums the incoming
    gradient over ranks and returns this rank's slice (as lightly's ``GatherLayer`` and SimCLR's
    ``cross_replica_sum`` do): with DDP averaging the parameter gradients, the result equals the
    one-process gradient on the concatenated batch (Chen et al. 2020, sec. 2: "global BN" and
    negatives across all cores). Every rank must call this function, and every rank that backprops
    through it must do so in the same order: the backward pass is a collective too. All ranks must
    pass the same shape (pad first, see :func:`must.losses.gather.gather_rows`).
    """
    if not is_initialized():
        return tensor
    return _GatherWithGradient.apply(tensor.contiguous(), _gather_group())


class _GatherWithGradient(torch.autograd.Function):
    """``forward``: all-gather + concatenate; ``backward``: all-reduce (sum) the gradient of the
    concatenation and keep this rank's rows."""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor, group: Any) -> torch.Tensor:
        ctx.group = group
        gathered = [torch.empty_like(tensor) for _ in range(dist.get_world_size(group))]
        dist.all_gather(gathered, tensor, group=group)
        return torch.cat(gathered, dim=0)

    @staticmethod
    def backward(ctx: Any, gradient: torch.Tensor) -> tuple[torch.Tensor, None]:
        gradient = gradient.contiguous().clone()
        dist.all_reduce(gradient, op=dist.ReduceOp.SUM, group=ctx.group)
        rows = gradient.shape[0] // dist.get_world_size(ctx.group)
        start = dist.get_rank(ctx.group) * rows
        return gradient[start:start + rows], None


_GATHER_GROUP: Any = None


def _gather_group() -> Any:
    """A process group of all ranks used only by :func:`all_gather_with_grad` (created on first
    use, which every rank reaches together since the gather is a collective). Its backward
    all-reduce runs inside autograd, interleaved with DDP's gradient buckets on the default
    group in an order that may differ between ranks (e.g. when a task is absent from one rank's
    batch); on a group of their own, collectives of the two kinds cannot be paired by mistake."""
    global _GATHER_GROUP
    if _GATHER_GROUP is None:
        _GATHER_GROUP = dist.new_group(ranks=list(range(dist.get_world_size())))
    return _GATHER_GROUP


def broadcast_object(value: object, source: int = 0) -> object:
    if not is_initialized():
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=source)
    return holder[0]


def all_gather_objects(value: object) -> list[object]:
    """``value`` from every rank, in rank order (``[value]`` for one process); a collective:
    every rank must call it. Tensors inside should be on the CPU."""
    if not is_initialized():
        return [value]
    gathered: list[object] = [None] * world_size()
    dist.all_gather_object(gathered, value)
    return gathered


@contextlib.contextmanager
def main_process_first() -> Iterator[None]:
    """Lets rank 0 do a step (e.g. write data) before the other ranks read its result."""
    if not is_main_process():
        barrier()
    yield
    if is_main_process():
        barrier()


Job = TypeVar("Job", bound=Hashable)
Result = TypeVar("Result")


def _one_thread() -> None:
    torch.set_num_threads(1)


def run_pool(jobs: Sequence[Job], work: Callable[[Job], Result], workers: int,
             on_done: Callable[[Job, Result], None] | None = None) -> dict[Job, Result]:
    """Runs ``work(job)`` for every job: in this process when ``workers`` is 1, else in a pool of
    ``workers`` spawned processes with one torch thread each, started in the order given
    (``work`` must be picklable, e.g. a ``functools.partial`` of a module-level function).
    ``on_done`` sees each result as its job finishes. On a failure the jobs not yet started are
    cancelled, running ones finish (whatever they write stays on disk) and the error is raised.
    Independent jobs only: the workers share no process group."""
    results: dict[Job, Result] = {}
    if workers <= 1 or len(jobs) <= 1:
        for job in jobs:
            results[job] = work(job)
            if on_done:
                on_done(job, results[job])
        return results
    with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=get_context("spawn"),
                             initializer=_one_thread) as pool:
        futures: dict[Future, Job] = {pool.submit(work, job): job for job in jobs}
        pending: Iterable[Future] = futures
        while pending:  # report each job as it finishes (progress bars are off in workers)
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                if future.exception() is None:
                    results[futures[future]] = future.result()
                    if on_done:
                        on_done(futures[future], results[futures[future]])
            failed = [future for future in done if future.exception() is not None]
            if failed:
                for future in pending:
                    future.cancel()
                wait(pending)
                raise failed[0].exception()  # type: ignore[misc]
    return results
