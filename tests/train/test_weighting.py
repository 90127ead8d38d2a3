"""Loss weighting strategies against hand computations: the MuST rule's numbers, uncertainty
weighting's gradient against autograd on its formula, PCGrad's projection of two conflicting
gradients (Yu et al. 2020, eq. in Algorithm 1), and PCGrad in a real 2-process gloo DDP run where
one rank's batch holds a single task and a loss's backward is a collective.

The DDP toy lives here; torchrun runs this file as each worker (see ``main``).
"""

from __future__ import annotations

import sys
import typing
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from must.errors import ConfigError
from must.train.config import TeacherRecipe, WeightingConfig
from must.train.weighting import (METHODS, PCGradWeighting, StaticWeighting, UncertaintyWeighting,
                                  build_weighting, must_weights, project_conflicting)


def test_must_rule_by_hand() -> None:
    config = WeightingConfig(
        method="must", depth_weight=0.05,
        teachers={"classification": TeacherRecipe(128, 0.02), "detection": TeacherRecipe(256, 0.32),
                  "depth": TeacherRecipe(64, 0.1)},
        weights={"rotation": 0.3})
    weights = must_weights(config, ["classification", "detection", "depth", "rotation"], 256, 0.1)
    assert weights["classification"] == pytest.approx(256 * 0.02 / (128 * 0.1)) == pytest.approx(0.4)
    assert weights["detection"] == pytest.approx(3.2)
    assert weights["depth"] == 0.05  # set separately, not by the rule
    assert weights["rotation"] == 0.3  # explicit override
    weighting = build_weighting(config, ["classification", "detection"], 256, 0.1)
    assert isinstance(weighting, StaticWeighting)
    assert weighting.weights() == pytest.approx({"classification": 0.4, "detection": 3.2})


def test_must_rule_without_a_teacher_recipe_names_the_task() -> None:
    with pytest.raises(ConfigError, match="weighting.teachers.segmentation"):
        must_weights(WeightingConfig(method="must"), ["segmentation"], 256, 0.1)


def test_methods_are_one_explicit_dict_and_unknown_names_fail() -> None:
    assert set(METHODS) == {"must", "equal", "uncertainty", "pcgrad", "upgrad", "mgda", "cagrad", "nash_mtl",
                            "imtl_g", "aligned_mtl", "graddrop", "dualproj", "dwa", "gradnorm", "rlw", "famo"}
    assert set(typing.get_args(typing.get_type_hints(WeightingConfig)["method"])) == set(METHODS)
    bogus = WeightingConfig.__new__(WeightingConfig)
    object.__setattr__(bogus, "method", "gradvac")
    with pytest.raises(ConfigError, match="unknown train.weighting.method 'gradvac'; choose one of: "
                                          "aligned_mtl, cagrad, dualproj, dwa, equal, famo, graddrop"):
        build_weighting(bogus, ["a"], 8, 0.1)


def test_static_backward_is_the_weighted_sum() -> None:
    parameter = nn.Parameter(torch.tensor([1.0, 2.0]))
    losses = {"a": (parameter ** 2).sum(), "b": parameter.sum()}
    weighting = StaticWeighting({"a": 0.5, "b": 2.0, "c": 9.0})
    total = weighting.backward(losses, [parameter], scale=0.5)
    assert total.item() == pytest.approx(0.5 * 5 + 2 * 3)
    assert torch.allclose(parameter.grad, 0.5 * (0.5 * 2 * parameter.detach() + 2.0))
    with pytest.raises(KeyError, match="unknown task"):
        weighting.backward({"z": parameter.sum()}, [parameter])


def test_uncertainty_gradient_matches_autograd_on_kendalls_formula() -> None:
    # "depth" is regression: 1/(2 sigma^2) L + log sigma; "a" classification: 1/sigma^2 L + log sigma
    weighting = build_weighting(WeightingConfig(method="uncertainty"), ["a", "depth"], 8, 0.1)
    assert isinstance(weighting, UncertaintyWeighting)
    with torch.no_grad():
        weighting.log_variances["a"].fill_(0.3)
        weighting.log_variances["depth"].fill_(-0.7)
    parameter = nn.Parameter(torch.tensor([0.5, -1.5]))
    total = weighting.backward({"a": (parameter ** 2).sum(), "depth": (3 * parameter).sum()}, [parameter])

    log_sigma = torch.tensor([0.15, -0.35], requires_grad=True)  # s = log sigma^2 = 2 log sigma
    x = torch.tensor([0.5, -1.5], requires_grad=True)
    loss_a, loss_depth = (x ** 2).sum(), (3 * x).sum()
    sigma_squared = torch.exp(2 * log_sigma)
    reference = (loss_a / sigma_squared[0] + log_sigma[0]
                 + loss_depth / (2 * sigma_squared[1]) + log_sigma[1])
    reference.backward()
    assert total.item() == pytest.approx(reference.item())
    assert torch.allclose(parameter.grad, x.grad)
    grads = torch.stack([weighting.log_variances["a"].grad, weighting.log_variances["depth"].grad])
    assert torch.allclose(grads, log_sigma.grad / 2)  # d/ds = d/dlog_sigma * dlog_sigma/ds
    sigma_squared = sigma_squared.detach()
    assert weighting.weights() == pytest.approx({"a": float(1 / sigma_squared[0]),
                                                 "depth": float(1 / (2 * sigma_squared[1]))})
    assert len(list(weighting.parameters())) == 2  # handed to the optimizer by the engine


def test_uncertainty_learns_kendalls_optimal_noise_and_resumes() -> None:
    # With the task losses held fixed, minimizing over sigma gives sigma^2 = L for a regression
    # task (d/ds of L/2 e^-s + s/2) and sigma^2 = 2 L for a classification task (of L e^-s + s/2).
    losses = {"classification": 1.5, "normals": 0.8, "depth": 2.0}
    weighting = build_weighting(WeightingConfig(method="uncertainty"), list(losses), 8, 0.1)
    optimizer = torch.optim.SGD(weighting.parameters(), lr=0.5)
    for _ in range(400):
        optimizer.zero_grad()
        weighting.backward({name: torch.tensor(value, requires_grad=True) for name, value in losses.items()}, [])
        optimizer.step()
    variances = {name: float(torch.exp(s.detach())) for name, s in weighting.log_variances.items()}
    assert variances == pytest.approx({"classification": 3.0, "normals": 0.8, "depth": 2.0}, rel=1e-4)
    resumed = UncertaintyWeighting(list(losses), ("depth", "normals"))
    resumed.load_state_dict(weighting.state_dict())
    assert resumed.weights() == weighting.weights()


def test_pcgrad_projects_two_conflicting_gradients() -> None:
    g1, g2 = torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 1.0])  # g1 . g2 = -1 < 0: conflict
    combined = project_conflicting([g1, g2], torch.Generator().manual_seed(0))
    # g1' = g1 - (g1.g2 / |g2|^2) g2 = (0.5, 0.5); g2' = g2 - (g2.g1 / |g1|^2) g1 = (0, 1)
    assert torch.allclose(combined, torch.tensor([0.5, 0.5]) + torch.tensor([0.0, 1.0]))
    # the projected vectors no longer conflict with the other task's gradient
    assert torch.dot(torch.tensor([0.5, 0.5]), g2) == 0 and torch.dot(torch.tensor([0.0, 1.0]), g1) == 0
    agreeing = project_conflicting([g1, torch.tensor([1.0, 1.0])], torch.Generator())
    assert torch.equal(agreeing, torch.tensor([2.0, 1.0]))  # no conflict: plain sum


def test_pcgrad_backward_on_shared_and_task_parameters() -> None:
    shared = nn.Parameter(torch.tensor([0.0, 0.0]))
    head = nn.Parameter(torch.tensor(2.0))
    losses = {"a": torch.dot(shared, torch.tensor([1.0, 0.0])) * head,  # d/dshared = (2, 0)
              "b": torch.dot(shared, torch.tensor([-1.0, 1.0])) + head}  # d/dshared = (-1, 1)
    weighting = PCGradWeighting({"a": 1.0, "b": 1.0}, seed=0)
    weighting.backward(losses, [shared], scale=0.5)
    # g_a' = (2,0) - (-2/2)(-1,1) = (1, 1); g_b' = (-1,1) - (-2/4)(2,0) = (0, 1); halved by scale
    assert torch.allclose(shared.grad, 0.5 * torch.tensor([1.0, 2.0]))
    assert torch.allclose(head.grad, torch.tensor(0.5 * 1.0))  # plain: d(a + b)/dhead = shared[0] + 1
    # accumulation adds to the existing gradient
    losses = {"a": torch.dot(shared, torch.tensor([1.0, 0.0])) * head,
              "b": torch.dot(shared, torch.tensor([-1.0, 1.0])) + head}
    weighting.backward(losses, [shared], scale=0.5)
    assert torch.allclose(shared.grad, torch.tensor([1.0, 2.0]))


def test_pcgrad_task_order_resumes_from_the_state_dict() -> None:
    # task 0 conflicts with 1 and 2, which are not orthogonal: projecting on 1 then 2 differs
    # from 2 then 1
    gradients = [torch.tensor([1.0, 0.0, 0.0]), torch.tensor([-1.0, 1.0, 0.0]),
                 torch.tensor([-1.0, 0.5, 1.0]), torch.tensor([0.0, 0.0, 1.0])]
    first = PCGradWeighting({name: 1.0 for name in "abcd"}, seed=3)
    project_conflicting(gradients, first.generator)
    second = PCGradWeighting({name: 1.0 for name in "abcd"}, seed=99)
    second.load_state_dict(first.state_dict())
    expected = project_conflicting(gradients, first.generator)
    assert torch.equal(expected, project_conflicting(gradients, second.generator))
    outcomes = {tuple(project_conflicting(gradients, torch.Generator().manual_seed(seed)).tolist())
                for seed in range(20)}
    assert len(outcomes) > 1  # the order is random and matters, so restoring it is needed


GATHER_TASKS = {"gathered": 1.0, "local": 0.7}
"""``gathered``'s loss gathers rows from every rank (like SimCLR's negatives), so its backward is
a collective; ``local`` is in rank 0's batch only."""


class GatherToy(nn.Module):
    """A linear trunk shared by one linear head per task (the MultiTaskModel layout)."""

    def __init__(self) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(4, 5), nn.Tanh())
        self.heads = nn.ModuleDict({name: nn.Linear(5, 3) for name in GATHER_TASKS})

    def forward(self, inputs: Tensor, tasks: list[str]) -> dict[str, Tensor]:
        features = self.trunk(inputs)
        return {name: self.heads[name](features) for name in tasks}


def gather_toy_inputs(rank: int) -> tuple[Tensor, list[str]]:
    """Rank ``rank``'s 3 inputs and the tasks its batch holds."""
    inputs = torch.randn(3, 4, generator=torch.Generator().manual_seed(10 + rank))
    return inputs, ["gathered", "local"] if rank == 0 else ["gathered"]


def gathered_loss(rows: Tensor, everyone: Tensor) -> Tensor:
    """This rank's rows against the rows of every rank (a similarity loss, like NT-Xent's)."""
    return (rows @ everyone.T).square().mean()


def local_loss(rows: Tensor) -> Tensor:
    return (rows.sum(dim=1) - 1.0).square().mean()  # conflicts with ``gathered``: PCGrad projects


def main(arguments: list[str]) -> None:
    """torchrun worker: one DDP step of PCGrad on :class:`GatherToy` (then a second one, to check
    the ranks' task orders stay in lockstep); saves this rank's gradients."""
    from torch.nn.parallel import DistributedDataParallel

    from must import distributed
    from must.losses.gather import gather_rows
    from must.train.weighting import PCGradWeighting

    torch.set_num_threads(1)
    distributed.setup(torch.device("cpu"), timeout_minutes=1.0)  # a hang fails within a minute
    rank = distributed.rank()
    torch.manual_seed(0)
    model = GatherToy()
    wrapped = DistributedDataParallel(model, find_unused_parameters=True)
    weighting = PCGradWeighting(GATHER_TASKS, seed=5)
    shared = list(model.trunk.parameters())
    inputs, tasks = gather_toy_inputs(rank)
    grads = []
    for _ in range(2):
        model.zero_grad(set_to_none=True)
        outputs = wrapped(inputs, tasks)
        everyone, _ = gather_rows(outputs["gathered"])
        losses = {"gathered": gathered_loss(outputs["gathered"], everyone)}
        if "local" in tasks:
            losses["local"] = local_loss(outputs["local"])
        weighting.backward(losses, shared, scale=0.5)
        weighting.synchronize_gradients(shared)
        grads.append({name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None})
    torch.save({"grads": grads[0], "generator": weighting.generator.get_state()},
               Path(arguments[0]) / f"rank{rank}.pt")
    distributed.teardown()


def expected_gather_toy_gradients() -> dict[str, Tensor]:
    """What the 2-process step must give, computed in one process: each rank's model is a copy of
    the parameters, so d/d(copy r) of the summed losses is what rank r's backward computes (the
    gather's backward sums every rank's gradient of its rows). PCGrad runs per rank on its own task
    gradients (rank 1: ``local``'s is zero), then DDP / the weighting average over the ranks."""
    from must.train.weighting import project_conflicting

    torch.manual_seed(0)
    template = GatherToy()
    copies = [{name: p.detach().clone().requires_grad_() for name, p in template.named_parameters()}
              for _ in range(2)]
    outputs, tasks = [], []
    for rank, parameters in enumerate(copies):
        inputs, rank_tasks = gather_toy_inputs(rank)
        outputs.append(torch.func.functional_call(template, parameters, (inputs, rank_tasks)))
        tasks.append(rank_tasks)
    everyone = torch.cat([output["gathered"] for output in outputs])
    per_task = {"gathered": sum(GATHER_TASKS["gathered"] * gathered_loss(o["gathered"], everyone) for o in outputs),
                "local": GATHER_TASKS["local"] * local_loss(outputs[0]["local"])}
    shared_names = [name for name in copies[0] if name.startswith("trunk.")]
    projected, plain = [], []
    for parameters in copies:
        shared = [parameters[name] for name in shared_names]
        flat = []
        for name in GATHER_TASKS:
            gradients = torch.autograd.grad(per_task[name], shared, retain_graph=True, allow_unused=True)
            flat.append(torch.cat([torch.zeros_like(p).flatten() if g is None else g.flatten()
                                   for p, g in zip(shared, gradients)]))
        projected.append(project_conflicting(flat, torch.Generator().manual_seed(5)))
        plain.append(sum(flat))
    total = sum(per_task.values())
    heads = torch.autograd.grad(total, [copy[name] for copy in copies for name in copy if name.startswith("heads.")],
                                allow_unused=True)
    head_names = [name for name in copies[0] if name.startswith("heads.")]
    expected = {}
    for index, name in enumerate(head_names):
        pair = [heads[index], heads[len(head_names) + index]]
        pair = [torch.zeros_like(copies[0][name]) if g is None else g for g in pair]
        expected[name] = 0.5 * (pair[0] + pair[1]) / 2
    offset = 0
    mean_projected, mean_plain = sum(projected) / 2, sum(plain) / 2
    assert not torch.allclose(mean_projected, mean_plain)  # the toy has a conflict to project
    for name in shared_names:
        size = copies[0][name].numel()
        expected[name] = 0.5 * mean_projected[offset:offset + size].view_as(copies[0][name])
        offset += size
    return expected


@pytest.mark.slow
def test_pcgrad_under_ddp_with_a_single_task_rank_finishes_with_the_expected_gradient(tmp_path: Path, run_torchrun) -> None:
    run_torchrun(Path(__file__), tmp_path, timeout=240)  # this file's main() on each rank
    ranks = [torch.load(tmp_path / f"rank{rank}.pt") for rank in range(2)]
    expected = expected_gather_toy_gradients()
    for result in ranks:
        assert result["grads"].keys() == expected.keys()
        for name, value in expected.items():
            torch.testing.assert_close(result["grads"][name], value, rtol=1e-5, atol=1e-7, msg=name)
    assert torch.equal(ranks[0]["generator"], ranks[1]["generator"])  # same task orders drawn


if __name__ == "__main__":
    main(sys.argv[1:])
