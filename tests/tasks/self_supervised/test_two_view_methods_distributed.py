"""The gathered losses (MoCo v3, Barlow Twins, VICReg) in a real 2-process gloo run: every rank's
loss is the one-process loss of the global batch, with equal, uneven and empty shares, and the
DDP-averaged gradient of each row is the one-process gradient."""

from __future__ import annotations

import textwrap
from collections.abc import Callable

import pytest
import torch

from must.tasks.self_supervised import BarlowTwinsTask, MoCoV3Task, VICRegTask

WORKER = textwrap.dedent(
    """
    import json, sys, torch
    from must import distributed
    from must.data.sample import TaskBatch
    from must.tasks.self_supervised import BarlowTwinsTask, MoCoV3Task, VICRegTask
    info = distributed.setup(torch.device("cpu"))
    generator = torch.Generator().manual_seed(11)
    rows = {name: torch.randn(8, 6, generator=generator) for name in ("a", "b", "c", "d")}
    tasks = {"mocov3": MoCoV3Task(projection_dim=6), "barlow_twins": BarlowTwinsTask(projection_dim=6),
             "vicreg": VICRegTask(projection_dim=6)}
    keys = {"mocov3": ("prediction_first", "prediction_second", "target_first", "target_second"),
            "barlow_twins": ("first", "second"), "vicreg": ("first", "second")}
    results = {}
    for method, task in tasks.items():
        for share, split in {"equal": 4, "uneven": 3, "empty": 0}.items():
            local = slice(0, split) if info.rank == 0 else slice(split, 8)
            leaves = {key: rows[name][local].clone().requires_grad_(True)
                      for key, name in zip(keys[method], "abcd")}
            if leaves[keys[method][0]].shape[0]:
                loss = task.loss(leaves, TaskBatch(torch.ones(1, dtype=torch.bool), {}))["loss"]
            else:  # no views on this rank: the model gives no output, the rank still joins
                loss = task.loss(None, TaskBatch(torch.zeros(1, dtype=torch.bool), {}))["loss"]
            loss.backward()
            results[f"{method}/{share}"] = {
                "loss": loss.item(),
                "grads": {key: (leaf.grad.tolist() if leaf.grad is not None else None)
                          for key, leaf in leaves.items()}}
    with open(sys.argv[1] + f"/rank{info.rank}.json", "w") as f:
        json.dump(results, f)
    distributed.teardown()
    """
)
KEYS = {"mocov3": ("prediction_first", "prediction_second", "target_first", "target_second"),
        "barlow_twins": ("first", "second"), "vicreg": ("first", "second")}


def one_process(method: str) -> tuple[float, dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(11)
    rows = {name: torch.randn(8, 6, generator=generator) for name in "abcd"}
    task = {"mocov3": MoCoV3Task(projection_dim=6), "barlow_twins": BarlowTwinsTask(projection_dim=6),
            "vicreg": VICRegTask(projection_dim=6)}[method]
    leaves = {key: rows[name].clone().requires_grad_(True) for key, name in zip(KEYS[method], "abcd")}
    loss = task.view_loss(leaves)["loss"]
    loss.backward()
    return loss.item(), {key: leaf.grad for key, leaf in leaves.items() if leaf.grad is not None}


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory, run_worker: Callable[..., list[dict]]) -> list[dict]:
    return run_worker(WORKER, tmp_path_factory.mktemp("two_view_ddp"))


@pytest.mark.parametrize("method", sorted(KEYS))
@pytest.mark.parametrize("share,split", [("equal", 4), ("uneven", 3), ("empty", 0)])
def test_gathered_loss_equals_one_process(results: list[dict], method: str, share: str, split: int) -> None:
    whole, gradients = one_process(method)
    for rank, local in enumerate((slice(0, split), slice(split, 8))):
        result = results[rank][f"{method}/{share}"]
        assert result["loss"] == pytest.approx(whole, rel=1e-5), (rank, result["loss"], whole)
        for key, gradient in gradients.items():
            if local.stop - local.start == 0:
                continue
            # DDP averages the ranks' gradients: each rank's rows carry world_size x the row's share.
            torch.testing.assert_close(torch.tensor(result["grads"][key]) / 2, gradient[local],
                                       rtol=1e-4, atol=1e-6)
