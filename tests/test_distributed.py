"""A real 2-process gloo run through torchrun: rank/world size from the environment, all-reduce,
gather with gradients, broadcast."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import torch

from must import distributed

SCRIPT = textwrap.dedent(
    """
    import json, sys, torch
    from must import distributed
    device = distributed.pick_device("auto")
    info = distributed.setup(device)
    mean = distributed.all_reduce_mean(torch.tensor([float(info.rank + 1)]))
    local = torch.full((2, 3), float(info.rank), requires_grad=True)
    gathered = distributed.all_gather_with_grad(local)
    gathered.sum().backward()
    token = distributed.broadcast_object({"from": info.rank})
    result = {"rank": distributed.rank(), "world": distributed.world_size(),
              "main": distributed.is_main_process(), "mean": mean.item(),
              "gathered": gathered.tolist(), "grad": local.grad.sum().item(), "token": token,
              "device": str(device)}
    with open(sys.argv[1] + f"/rank{info.rank}.json", "w") as f:
        json.dump(result, f)
    distributed.teardown()
    """
)


def test_single_process_defaults() -> None:
    assert distributed.world_size() == 1 and distributed.rank() == 0 and distributed.is_main_process()
    tensor = torch.ones(3)
    assert distributed.all_reduce_mean(tensor) is tensor
    assert distributed.pick_device("cpu").type == "cpu"
    assert distributed.pick_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_two_process_gloo(tmp_path: Path) -> None:
    script = tmp_path / "worker.py"
    script.write_text(SCRIPT)
    environment = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    environment["OMP_NUM_THREADS"] = "1"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               str(script), str(tmp_path)]
    run = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for rank, result in enumerate(results):
        assert result["rank"] == rank and result["world"] == 2
        assert result["main"] == (rank == 0)
        assert result["mean"] == 1.5
        assert result["gathered"] == [[0.0] * 3] * 2 + [[1.0] * 3] * 2
        assert result["grad"] == 6.0  # gradient flows only through the local slice
        assert result["token"] == {"from": 0}
