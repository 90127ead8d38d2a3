"""Every weighting method in a real 2-process gloo DDP run equals one process on the global
batch (each rank holding half of it), and with a task missing from one rank's share both ranks
still finish the step with the same gradients and weights.

torchrun runs this file as each worker (see ``main``)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

TASKS = ["a", "b", "c"]
STEPS = 3
"""Steps with every task on both ranks (compared with one process), then one where rank 1 lacks c."""


def methods() -> list[str]:
    """Every method whose torchjd solver is installed; not ``must`` (static, like ``equal``) nor
    ``pcgrad``, which projects each rank's own gradients (its docstring; test_weighting.py)."""
    from must.train.gradient_weighting import missing_solvers
    from must.train.weighting import METHODS

    return [method for method in sorted(METHODS) if method not in ("must", "pcgrad") and not missing_solvers(method)]


class Toy(nn.Module):
    """A shared trunk and one head per task; ``forward`` returns the tasks' mean losses."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.trunk = nn.Linear(4, 5)
        self.heads = nn.ModuleDict({name: nn.Linear(5, 1) for name in TASKS})

    def forward(self, inputs: Tensor, tasks: list[str]) -> dict[str, Tensor]:
        features = torch.tanh(self.trunk(inputs))
        return {name: (self.heads[name](features).squeeze(1) - inputs[:, index] * (index + 1)).square().mean()
                for index, name in enumerate(TASKS) if name in tasks}


def share(step: int, rank: int) -> Tensor:
    """Rank ``rank``'s 3 rows of step ``step``'s global batch of 6."""
    return torch.randn(3, 4, generator=torch.Generator().manual_seed(100 * step + rank))


def run(method: str, model: nn.Module, parameters: nn.Module, batches: list[tuple[Tensor, list[str]]]
        ) -> list[dict[str, object]]:
    """SGD steps under ``method``; per step the gradients after synchronization and the weights."""
    from must.train.config import WeightingConfig
    from must.train.weighting import build_weighting

    weighting = build_weighting(WeightingConfig(method=method), TASKS, 8, 0.1, seed=4)
    optimizer = torch.optim.SGD(parameters.parameters(), lr=0.1)
    shared = list(parameters.trunk.parameters())
    records = []
    for inputs, tasks in batches:
        optimizer.zero_grad(set_to_none=True)
        weighting.backward(model(inputs, tasks), shared)
        weighting.synchronize_gradients(shared)
        records.append({"grads": {name: p.grad.clone() for name, p in parameters.named_parameters()
                                  if p.grad is not None}, "weights": weighting.weights()})
        optimizer.step()
    return records


def main(arguments: list[str]) -> None:
    """torchrun worker: every method's steps on this rank's shares; saves the records."""
    from torch.nn.parallel import DistributedDataParallel

    from must import distributed

    torch.set_num_threads(1)
    # a hang fails within 5 minutes (generous: on a loaded machine one rank may wait long for the other)
    distributed.setup(torch.device("cpu"), timeout_minutes=5.0)
    rank = distributed.rank()
    batches = [(share(step, rank), TASKS) for step in range(STEPS)]
    batches.append((share(STEPS, rank), TASKS if rank == 0 else ["a", "b"]))
    results = {}
    for method in methods():
        model = Toy()
        wrapped = DistributedDataParallel(model, find_unused_parameters=True)
        results[method] = run(method, wrapped, model, batches)
    torch.save(results, Path(arguments[0]) / f"rank{rank}.pt")
    distributed.teardown()


@pytest.mark.slow
def test_every_method_under_ddp_equals_one_process_on_the_global_batch(tmp_path: Path, run_torchrun) -> None:
    run_torchrun(Path(__file__), tmp_path, timeout=400)  # this file's main() on each rank
    ranks = [torch.load(tmp_path / f"rank{rank}.pt", weights_only=False) for rank in range(2)]
    together = [(torch.cat([share(step, 0), share(step, 1)]), TASKS) for step in range(STEPS)]
    assert set(ranks[0]) == set(methods()) and len(ranks[0]) >= 8
    for method in methods():
        model = Toy()
        expected = run(method, model, model, together)
        for step in range(STEPS + 1):
            records = [ranks[rank][method][step] for rank in range(2)]
            assert records[0]["weights"] == pytest.approx(records[1]["weights"], rel=1e-5), (method, step)
            for name, value in records[0]["grads"].items():
                torch.testing.assert_close(records[1]["grads"][name], value, msg=f"{method} step {step} {name}")
            if step == STEPS:
                continue
            assert records[0]["weights"] == pytest.approx(expected[step]["weights"], rel=1e-4), (method, step)
            assert records[0]["grads"].keys() == expected[step]["grads"].keys()
            for name, value in expected[step]["grads"].items():
                torch.testing.assert_close(records[0]["grads"][name], value, rtol=1e-4, atol=1e-6,
                                           msg=f"{method} step {step} {name}")


if __name__ == "__main__":
    main(sys.argv[1:])
