"""A real 2-process gloo run through torchrun: rank/world size from the environment, all-reduce,
gather with its exact gradient, broadcast; and NT-Xent under DDP, whose averaged gradient must
equal the one-process gradient on the concatenated batch (SimCLR sec. 2: negatives from every
device)."""

import os
import textwrap
from pathlib import Path

import pytest
import torch
from torch.nn.parallel import DistributedDataParallel

from must import distributed
from must.config import ConfigError
from must.losses.ntxent import nt_xent_loss

SCRIPT = textwrap.dedent(
    """
    import json, sys, torch
    from torch.nn.parallel import DistributedDataParallel
    from must import distributed
    from must.losses.ntxent import nt_xent_loss
    device = distributed.pick_device("auto")
    info = distributed.setup(device)
    mean = distributed.all_reduce_mean(torch.tensor([float(info.rank + 1)]))
    local = torch.full((2, 3), float(info.rank), requires_grad=True)
    gathered = distributed.all_gather_with_grad(local)
    (gathered * torch.arange(1.0, 5.0)[:, None]).sum().backward()
    token = distributed.broadcast_object({"from": info.rank})

    # NT-Xent through a DDP-wrapped projection: each rank holds half of the images (both views).
    torch.manual_seed(0)  # the same initial projection on both ranks
    projection = DistributedDataParallel(torch.nn.Linear(6, 4))
    generator = torch.Generator().manual_seed(3)
    first, second = torch.randn(8, 6, generator=generator), torch.randn(8, 6, generator=generator)
    rows = slice(4 * info.rank, 4 * info.rank + 4)
    projected = projection(torch.cat([first[rows], second[rows]]))  # one forward per step under DDP
    loss = nt_xent_loss(projected[:4], projected[4:], temperature=0.2)
    loss.backward()

    result = {"rank": distributed.rank(), "world": distributed.world_size(),
              "main": distributed.is_main_process(), "mean": mean.item(),
              "gathered": gathered.tolist(), "grad": local.grad.tolist(), "token": token,
              "device": str(device), "ntxent_loss": loss.item(),
              "ntxent_weight_grad": projection.module.weight.grad.tolist(),
              "ntxent_bias_grad": projection.module.bias.grad.tolist()}
    with open(sys.argv[1] + f"/rank{info.rank}.json", "w") as f:
        json.dump(result, f)
    distributed.teardown()
    """
)


def test_single_process_defaults() -> None:
    assert distributed.world_size() == 1 and distributed.rank() == 0 and distributed.is_main_process()
    tensor = torch.ones(3)
    assert distributed.all_reduce_mean(tensor) is tensor
    assert distributed.all_gather_with_grad(tensor) is tensor
    assert distributed.pick_device("cpu").type == "cpu"
    assert distributed.pick_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.fixture(scope="module")
def two_process_results(tmp_path_factory: pytest.TempPathFactory, run_worker) -> list[dict]:
    """One torchrun launch for every 2-process check of this file (a launch costs seconds)."""
    return run_worker(SCRIPT, tmp_path_factory.mktemp("gloo"))


def test_two_process_gloo(two_process_results: list[dict]) -> None:
    for rank, result in enumerate(two_process_results):
        assert result["rank"] == rank and result["world"] == 2
        assert result["main"] == (rank == 0)
        assert result["mean"] == 1.5
        assert result["gathered"] == [[0.0] * 3] * 2 + [[1.0] * 3] * 2
        assert result["token"] == {"from": 0}
    # Both ranks backpropagate sum_i (i + 1) * gathered[i]: the exact gradient of a local row is
    # the sum over ranks of its coefficient (2 ranks x the same coefficients), not one rank's.
    assert two_process_results[0]["grad"] == [[2.0] * 3, [4.0] * 3]
    assert two_process_results[1]["grad"] == [[6.0] * 3, [8.0] * 3]


def test_ddp_ntxent_gradient_equals_one_process(two_process_results: list[dict]) -> None:
    torch.manual_seed(0)
    projection = torch.nn.Linear(6, 4)
    generator = torch.Generator().manual_seed(3)
    first, second = torch.randn(8, 6, generator=generator), torch.randn(8, 6, generator=generator)
    loss = nt_xent_loss(projection(first), projection(second), temperature=0.2)
    loss.backward()
    ranks = two_process_results
    assert (ranks[0]["ntxent_loss"] + ranks[1]["ntxent_loss"]) / 2 == pytest.approx(loss.item(), rel=1e-5)
    for result in ranks:  # DDP averaged the gradients: both ranks hold the same, the exact one
        torch.testing.assert_close(torch.tensor(result["ntxent_weight_grad"]), projection.weight.grad,
                                   rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(torch.tensor(result["ntxent_bias_grad"]), projection.bias.grad,
                                   rtol=1e-4, atol=1e-6)


def test_process_count_caps_at_the_machine() -> None:
    from must.distributed import process_count

    available = torch.cuda.device_count() if torch.cuda.is_available() else (os.cpu_count() or 1)
    assert process_count(0) == 1
    assert process_count(1) == 1
    assert process_count(available + 5) == available


@pytest.mark.slow
def test_pool_runs_every_job_like_the_sequential_loop() -> None:
    # Library callables: a spawned worker cannot import this test module (importlib import mode).
    import operator

    jobs = [3, 1, 4, 1.5]
    finished: list[float] = []
    sequential = distributed.run_pool(jobs, operator.neg, workers=1)
    pooled = distributed.run_pool(jobs, operator.neg, workers=2, on_done=lambda job, _: finished.append(job))
    assert pooled == sequential == {3: -3, 1: -1, 4: -4, 1.5: -1.5}
    assert sorted(finished) == sorted(jobs)
    with pytest.raises(AttributeError, match="no_such_field"):
        distributed.run_pool([1, 2], operator.attrgetter("no_such_field"), workers=2)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_a_cuda_device_without_cuda_is_a_config_error_naming_it() -> None:
    with pytest.raises(ConfigError, match=r"device 'cuda': no CUDA GPU is visible .*use device=cpu"):
        distributed.pick_device("cuda")
    with pytest.raises(ConfigError, match=r"device 'cuda:1': no CUDA GPU is visible"):
        distributed.pick_device("cuda:1")


def test_a_device_name_torch_does_not_know_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"device 'gpu': not a device name; use auto, cpu, cuda or cuda:N"):
        distributed.pick_device("gpu")


def test_device_dependent_choices() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)  # a device object needs no GPU
    assert distributed.backend(cpu) == distributed.backend(None) == "gloo"
    assert distributed.backend(cuda) == "cpu:gloo,cuda:nccl"  # host tensors keep a backend under NCCL
    assert not distributed.pins_memory(cpu) and not distributed.pins_memory(None)
    assert distributed.pins_memory(cuda)
    assert not distributed.native_bf16(cpu)


def test_data_parallel_wraps_whenever_a_process_group_is_up(tmp_path: Path) -> None:
    """Also a one-process group: that is how one GPU runs the NCCL path of N (tests/cuda)."""
    model = torch.nn.Linear(3, 2)
    assert distributed.data_parallel(model, torch.device("cpu")) is model
    torch.distributed.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        wrapped = distributed.data_parallel(model, torch.device("cpu"))
        assert isinstance(wrapped, DistributedDataParallel) and wrapped.module is model
    finally:
        distributed.teardown()
    assert not distributed.is_initialized()
