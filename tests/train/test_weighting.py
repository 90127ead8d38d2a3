"""Loss weighting strategies against hand computations: the MuST rule's numbers, uncertainty
weighting's gradient against autograd on its formula, PCGrad's projection of two conflicting
gradients (Yu et al. 2020, eq. in Algorithm 1)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

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
    with pytest.raises(KeyError, match="weighting.teachers.segmentation"):
        must_weights(WeightingConfig(method="must"), ["segmentation"], 256, 0.1)


def test_methods_are_one_explicit_dict_and_unknown_names_fail() -> None:
    assert set(METHODS) == {"must", "equal", "uncertainty", "pcgrad"}
    bogus = WeightingConfig.__new__(WeightingConfig)
    object.__setattr__(bogus, "method", "gradnorm")
    with pytest.raises(KeyError, match="choose one of: equal, must, pcgrad, uncertainty"):
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


def test_uncertainty_gradient_matches_autograd_on_the_formula() -> None:
    weighting = UncertaintyWeighting(["a", "b"])
    with torch.no_grad():
        weighting.log_variances["a"].fill_(0.3)
        weighting.log_variances["b"].fill_(-0.7)
    parameter = nn.Parameter(torch.tensor([0.5, -1.5]))
    total = weighting.backward({"a": (parameter ** 2).sum(), "b": (3 * parameter).sum()}, [parameter])

    s = torch.tensor([0.3, -0.7], requires_grad=True)
    x = torch.tensor([0.5, -1.5], requires_grad=True)
    loss_a, loss_b = (x ** 2).sum(), (3 * x).sum()
    reference = torch.exp(-s[0]) * loss_a + s[0] + torch.exp(-s[1]) * loss_b + s[1]
    reference.backward()
    assert total.item() == pytest.approx(reference.item())
    assert torch.allclose(parameter.grad, x.grad)
    grads = torch.stack([weighting.log_variances["a"].grad, weighting.log_variances["b"].grad])
    assert torch.allclose(grads, s.grad)
    # by hand: d/ds_i = 1 - exp(-s_i) L_i
    assert torch.allclose(grads, 1 - torch.exp(-s.detach()) * torch.tensor([2.5, -3.0]))
    assert weighting.weights() == pytest.approx({"a": float(torch.exp(torch.tensor(-0.3))),
                                                 "b": float(torch.exp(torch.tensor(0.7)))})
    assert len(list(weighting.parameters())) == 2  # handed to the optimizer by the engine


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
