"""FreeMatch's and SoftMatch's moving averages under 2-process gloo DDP: the batch statistics are
averaged over the ranks, in as few all-reduces as the statistics allow (FreeMatch: one; SoftMatch:
two, since its confidence is read after uniform alignment by the updated ``p_model``), and the
state equals the formula computed in one process from both ranks' batches."""

from __future__ import annotations

import textwrap
from pathlib import Path

import torch

from must.tasks.classification import ClassificationTask
from must.tasks.self_supervised.freematch import FreeMatchTask
from must.tasks.self_supervised.softmatch import SoftMatchTask

CLASSES, MOMENTUM, STEPS = 5, 0.9, 2

WORKER = textwrap.dedent(
    """
    import json, sys
    import torch
    import torch.distributed as dist
    from must import distributed
    from must.tasks.classification import ClassificationTask
    from must.tasks.self_supervised.freematch import FreeMatchTask
    from must.tasks.self_supervised.softmatch import SoftMatchTask

    CLASSES, MOMENTUM, STEPS = 5, 0.9, 2
    info = distributed.setup(torch.device("cpu"))
    calls = []
    reduce = dist.all_reduce
    def counting(tensor, *args, **kwargs):
        calls.append(tensor.numel())
        return reduce(tensor, *args, **kwargs)
    dist.all_reduce = counting
    results = {}
    for name, task in (("freematch", FreeMatchTask(ClassificationTask(CLASSES), momentum=MOMENTUM)),
                       ("softmatch", SoftMatchTask(ClassificationTask(CLASSES), momentum=MOMENTUM))):
        task.ensure_state(CLASSES, torch.device("cpu"))
        counts = []
        for step in range(STEPS):
            generator = torch.Generator().manual_seed(10 * step + info.rank)
            probabilities = torch.softmax(3 * torch.randn(6, CLASSES, generator=generator), dim=1)
            calls.clear()
            task.observe(probabilities, {})
            counts.append(len(calls))
        results[name] = {"all_reduces": counts, "state": {k: v.tolist() for k, v in task.state.items()}}
    with open(sys.argv[1] + f"/rank{info.rank}.json", "w") as f:
        json.dump(results, f)
    distributed.teardown()
    """
)


def _batches(step: int) -> list[torch.Tensor]:
    """Both ranks' weak-view probabilities at ``step``, as the worker draws them."""
    return [torch.softmax(3 * torch.randn(6, CLASSES, generator=torch.Generator().manual_seed(10 * step + rank)),
                          dim=1) for rank in range(2)]


def _average(old: torch.Tensor, per_rank: list[torch.Tensor]) -> torch.Tensor:
    return MOMENTUM * old + (1 - MOMENTUM) * (per_rank[0] + per_rank[1]) / 2


def _freematch_reference() -> dict[str, torch.Tensor]:
    state = FreeMatchTask(ClassificationTask(CLASSES)).initial_state(CLASSES)
    for step in range(STEPS):
        batches = _batches(step)
        state["tau"] = _average(state["tau"], [b.max(dim=1).values.mean() for b in batches])
        state["p_model"] = _average(state["p_model"], [b.mean(dim=0) for b in batches])
        state["histogram"] = _average(state["histogram"], [
            torch.bincount(b.argmax(dim=1), minlength=CLASSES).float() / b.shape[0] for b in batches])
    return state


def _softmatch_reference() -> dict[str, torch.Tensor]:
    task = SoftMatchTask(ClassificationTask(CLASSES))
    task.state = task.initial_state(CLASSES)
    for step in range(STEPS):
        batches = _batches(step)
        task.state["p_model"] = _average(task.state["p_model"], [b.mean(dim=0) for b in batches])
        confidences = [task.aligned(b).max(dim=1).values for b in batches]  # with the updated p_model
        task.state["mu"] = _average(task.state["mu"], [c.mean() for c in confidences])
        task.state["variance"] = _average(task.state["variance"], [c.var(unbiased=True) for c in confidences])
    return task.state


def test_two_processes_average_the_statistics_in_one_fused_all_reduce(tmp_path: Path, run_worker) -> None:
    results = run_worker(WORKER, tmp_path)
    assert results[0] == results[1]  # every rank holds the same state
    assert results[0]["freematch"]["all_reduces"] == [1] * STEPS
    assert results[0]["softmatch"]["all_reduces"] == [2] * STEPS
    for name, reference in (("freematch", _freematch_reference()), ("softmatch", _softmatch_reference())):
        for key, value in reference.items():
            torch.testing.assert_close(torch.tensor(results[0][name]["state"][key]), value, msg=f"{name} {key}")
