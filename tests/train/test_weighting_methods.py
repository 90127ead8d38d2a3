"""The torchjd aggregators and the loss-based weightings against their papers' formulas on tiny
problems (hand computations), PCGrad against torchjd's PCGrad, and every method's behaviour with a
task missing from the batch and across a save / load of its state dict."""

from __future__ import annotations

import io
import pytest
import torch
from torch import Tensor, nn
from torchjd.aggregation import PCGrad

from must.config import ConfigError
from must.train import gradient_weighting
from must.train.config import WeightingConfig
from must.train.gradient_weighting import missing_solvers
from must.train.loss_weighting import DWAWeighting, FAMOWeighting, GradNormWeighting, RLWWeighting
from must.train.weighting import METHODS, build_weighting, project_conflicting

TASKS = ["a", "b", "c"]


def available(method: str) -> bool:
    """False when torchjd's optional solver for ``method`` is not installed."""
    return not missing_solvers(method)


ADAPTIVE = [method for method in sorted(METHODS) if method != "must"]


class Toy(nn.Module):
    """A shared linear trunk and one linear head per task."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.trunk = nn.Linear(4, 5)
        self.heads = nn.ModuleDict({name: nn.Linear(5, 1) for name in TASKS})

    def losses(self, inputs: Tensor, tasks: str) -> dict[str, Tensor]:
        features = torch.tanh(self.trunk(inputs))
        return {name: (self.heads[name](features).squeeze(1) - inputs[:, index]).square().mean()
                for index, name in enumerate(TASKS) if name in tasks}


def train_steps(model: Toy, weighting: nn.Module, steps: range) -> list[dict[str, Tensor]]:
    """SGD steps of ``model`` under ``weighting``; step 1 of every 3 lacks task ``c``."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    gradients = []
    for step in steps:
        inputs = torch.randn(6, 4, generator=torch.Generator().manual_seed(step))
        optimizer.zero_grad(set_to_none=True)
        weighting.backward(model.losses(inputs, "ab" if step % 3 == 1 else "abc"), list(model.trunk.parameters()))
        weighting.synchronize_gradients(list(model.trunk.parameters()))
        gradients.append({name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None})
        optimizer.step()
    return gradients


@pytest.mark.parametrize("method", ADAPTIVE)
def test_every_method_trains_with_a_missing_task_and_resumes_exactly(method: str) -> None:
    if not available(method):
        pytest.skip(f"torchjd's solver for {method} is not installed")
    config = WeightingConfig(method=method)
    model, weighting = Toy(), build_weighting(config, TASKS, 8, 0.1, seed=4)
    straight = train_steps(model, weighting, range(6))
    final_weights = weighting.weights()
    for gradients in straight:
        assert all(torch.isfinite(g).all() for g in gradients.values())
        assert {"trunk.weight", "heads.a.weight", "heads.b.weight"} <= gradients.keys()
    model, weighting = Toy(), build_weighting(config, TASKS, 8, 0.1, seed=4)
    train_steps(model, weighting, range(3))
    buffer = io.BytesIO()  # as the engine's checkpoint: torch.save, then a weights_only load
    torch.save((model.state_dict(), weighting.state_dict()), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    resumed_model, resumed = Toy(), build_weighting(config, TASKS, 8, 0.1, seed=99)
    resumed_model.load_state_dict(state[0])
    resumed.load_state_dict(state[1])
    for expected, got in zip(straight[3:], train_steps(resumed_model, resumed, range(3, 6))):
        assert expected.keys() == got.keys()
        for name in expected:
            torch.testing.assert_close(got[name], expected[name], msg=f"{method}: {name}")
    assert resumed.weights() == pytest.approx(final_weights)


def test_our_pcgrad_equals_torchjds_for_two_tasks() -> None:
    # with two tasks the random order cannot matter, so both implementations of Algorithm 1 agree
    for seed in range(5):
        jacobian = torch.randn(2, 7, generator=torch.Generator().manual_seed(seed))
        ours = project_conflicting(list(jacobian), torch.Generator().manual_seed(seed))
        torch.testing.assert_close(ours, PCGrad()(jacobian))


def test_pcgrad_equals_torchjds_for_three_tasks_in_the_same_order() -> None:
    # torchjd draws its permutations from the global generator, ours from its own: give both the same
    jacobian = torch.randn(3, 6, generator=torch.Generator().manual_seed(2))
    torch.manual_seed(7)
    theirs = PCGrad()(jacobian)
    torch.manual_seed(7)
    ours = project_conflicting(list(jacobian), torch.default_generator)
    torch.testing.assert_close(ours, theirs)


def run_aggregator(method: str, jacobian: Tensor) -> Tensor:
    """The shared gradient the strategy ``method`` writes for losses whose gradients are the rows
    of ``jacobian`` (loss_i = row_i . x)."""
    x = nn.Parameter(torch.zeros(jacobian.shape[1]))
    weighting = build_weighting(WeightingConfig(method=method), [f"t{i}" for i in range(len(jacobian))], 8, 0.1)
    weighting.backward({f"t{i}": row @ x for i, row in enumerate(jacobian)}, [x])
    return x.grad


def test_mgda_is_the_min_norm_point_of_two_gradients() -> None:
    # Sener & Koltun 2018, Algorithm 2 (two tasks): a = clip(((g2 - g1) . g2) / |g1 - g2|^2, 0, 1)
    g1, g2 = torch.tensor([1.0, 0.0, 2.0]), torch.tensor([-1.0, 1.0, 0.5])
    a = float(((g2 - g1) @ g2) / (g1 - g2).square().sum())
    assert 0 < a < 1
    torch.testing.assert_close(run_aggregator("mgda", torch.stack([g1, g2])), a * g1 + (1 - a) * g2,
                               rtol=1e-4, atol=1e-4)


def test_imtl_g_has_equal_projections_on_every_unit_gradient() -> None:
    # Liu et al. 2021 (IMTL), sec. 3.2: g . u_i is the same for every task, g = sum alpha_i g_i, sum alpha = 1
    jacobian = torch.tensor([[1.0, 0.0, 2.0], [-1.0, 1.0, 0.5], [0.3, -2.0, 1.0]])
    update = run_aggregator("imtl_g", jacobian)
    units = jacobian / jacobian.norm(dim=1, keepdim=True)
    projections = units @ update
    torch.testing.assert_close(projections, projections.mean().expand(3), rtol=1e-4, atol=1e-5)
    alpha = torch.linalg.lstsq(jacobian.T, update.unsqueeze(1)).solution.squeeze(1)
    assert float(alpha.sum()) == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize("method", ["upgrad", "dualproj"])
def test_upgrad_and_dualproj_do_not_conflict_and_keep_agreeing_gradients(method: str) -> None:
    if not available(method):
        pytest.skip(f"torchjd's solver for {method} is not installed")
    conflicting = torch.tensor([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]])
    update = run_aggregator(method, conflicting)
    assert (conflicting @ update >= -1e-2).all()  # Quinton & Rey 2024, Prop. 1 (to the QP solver's tolerance)
    agreeing = torch.tensor([[1.0, 2.0, 0.0], [2.0, 1.0, 1.0]])
    torch.testing.assert_close(run_aggregator(method, agreeing), agreeing.mean(dim=0), rtol=1e-4, atol=1e-4)


def test_an_optional_solver_that_is_missing_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gradient_weighting, "find_spec", lambda name: None)
    with pytest.raises(ConfigError, match=r"nash_mtl.*cvxpy, ecos.*torchjd\[nash-mtl\]"):
        build_weighting(WeightingConfig(method="nash_mtl"), TASKS, 8, 0.1)


def step_with(weighting: nn.Module, values: dict[str, float]) -> dict[str, Tensor]:
    """One step whose losses have the given values; returns the loss gradients d total / d L_i."""
    leaves = {name: torch.tensor(value, requires_grad=True) for name, value in values.items()}
    weighting.backward(dict(leaves), [])
    weighting.synchronize_gradients([])
    return {name: leaf.grad for name, leaf in leaves.items()}


def test_dwa_weights_follow_eq_7() -> None:
    weighting = DWAWeighting(TASKS, temperature=2.0, window=1)
    steps = [{"a": 4.0, "b": 2.0, "c": 1.0}, {"a": 2.0, "b": 2.0, "c": 3.0}, {"a": 1.0, "b": 1.0}]
    seen = [step_with(weighting, values) for values in steps]
    assert all(float(g) == 1.0 for gradients in seen[:2] for g in gradients.values())  # t = 1, 2: w = 1
    ratios = torch.tensor([2.0 / 4.0, 2.0 / 2.0, 3.0 / 1.0])
    expected = 3 * torch.softmax(ratios / 2.0, dim=0)
    assert [float(seen[2][name]) for name in "ab"] == pytest.approx(expected[:2].tolist())
    # c was missing at the last step: its history did not move, the others' did
    after = step_with(weighting, {"a": 1.0, "b": 1.0, "c": 1.0})
    expected = 3 * torch.softmax(torch.tensor([1.0 / 2.0, 1.0 / 2.0, 3.0 / 1.0]) / 2.0, dim=0)
    assert [float(after[name]) for name in TASKS] == pytest.approx(expected.tolist())


def test_dwa_averages_a_window_of_steps() -> None:
    weighting = DWAWeighting(["a", "b"], temperature=1.0, window=2)
    for values in ({"a": 4.0, "b": 1.0}, {"a": 2.0, "b": 1.0}, {"a": 1.0, "b": 1.0}, {"a": 2.0, "b": 3.0}):
        step_with(weighting, values)
    gradients = step_with(weighting, {"a": 1.0, "b": 1.0})
    expected = 2 * torch.softmax(torch.tensor([1.5 / 3.0, 2.0 / 1.0]), dim=0)
    assert [float(gradients[name]) for name in "ab"] == pytest.approx(expected.tolist())


def test_rlw_draws_softmax_of_a_standard_normal_once_per_step() -> None:
    weighting = RLWWeighting(TASKS, seed=3)
    generator = torch.Generator().manual_seed(3)
    for _ in range(3):
        expected = torch.softmax(torch.randn(3, generator=generator), dim=0)
        leaves = {name: torch.tensor(1.0, requires_grad=True) for name in TASKS}
        weighting.backward({name: leaves[name] for name in "ab"}, [])  # two micro-steps, one draw
        weighting.backward({name: leaves[name] for name in "bc"}, [])
        weighting.synchronize_gradients([])
        assert float(leaves["a"].grad) == pytest.approx(float(expected[0]))
        assert float(leaves["b"].grad) == pytest.approx(2 * float(expected[1]))
        assert float(leaves["c"].grad) == pytest.approx(float(expected[2]))


def test_famo_weights_and_logit_update_follow_algorithm_1() -> None:
    weighting = FAMOWeighting(["a", "b"], beta=0.5, gamma=0.1)
    first = step_with(weighting, {"a": 2.0, "b": 0.5})
    # z = (1/2, 1/2); w_i = c z_i / l_i with c = 1 / sum z_i / l_i
    c = 1.0 / (0.5 / 2.0 + 0.5 / 0.5)
    assert [float(first[name]) for name in "ab"] == pytest.approx([c * 0.5 / 2.0, c * 0.5 / 0.5])
    step_with(weighting, {"a": 1.0, "b": 0.4})
    delta = torch.tensor([torch.log(torch.tensor(2.0 / 1.0)), torch.log(torch.tensor(0.5 / 0.4))])
    z = torch.tensor([0.5, 0.5])
    jacobian = torch.diag(z) - torch.outer(z, z)  # d softmax / d xi at xi = 0
    logits = torch.zeros(2) - 0.5 * (jacobian.T @ delta + 0.1 * torch.zeros(2))
    torch.testing.assert_close(weighting.logits, logits)
    z = torch.softmax(logits, dim=0)
    third = step_with(weighting, {"a": 1.0, "b": 0.5})
    c = 1.0 / float(z[0] / 1.0 + z[1] / 0.5)
    assert [float(third[name]) for name in "ab"] == pytest.approx([c * float(z[0]), c * float(z[1]) / 0.5])
    before = weighting.logits.clone()
    step_with(weighting, {"a": 1.0})  # b missing: a's delta is log(1 / 1) = 0, so both logits only decay
    torch.testing.assert_close(weighting.logits, before * (1 - 0.5 * 0.1))


def test_gradnorm_update_follows_eq_2() -> None:
    x = nn.Parameter(torch.tensor([1.0, 2.0, 3.0]))
    weighting = GradNormWeighting(["a", "b"], alpha=1.5, lr=0.1)
    # step 1: L = (3, 5) are L(0), so r = 1 and the target is the mean of G = (3, sqrt 2)
    weighting.backward({"a": 3 * x[0], "b": x[1] + x[2]}, [x])
    torch.testing.assert_close(x.grad, torch.tensor([3.0, 1.0, 1.0]))  # the weights before their update
    norms = torch.tensor([3.0, 2.0 ** 0.5])
    weights = torch.ones(2) - 0.1 * torch.sign(norms - norms.mean()) * norms
    weights = weights * 2 / weights.sum()
    torch.testing.assert_close(weighting.task_weights, weights)
    # step 2: L = (6, 5), L~ = (2, 1), r = L~ / mean L~, target = mean(G) r^alpha
    x.grad = None
    weighting.backward({"a": 6 * x[0], "b": x[1] + x[2]}, [x])
    torch.testing.assert_close(x.grad, torch.tensor([6 * weights[0], weights[1], weights[1]]))
    norms = torch.tensor([6.0, 2.0 ** 0.5])
    grad_norms = weights * norms
    relative = torch.tensor([2.0, 1.0])
    target = grad_norms.mean() * (relative / relative.mean()) ** 1.5
    weights = weights - 0.1 * torch.sign(grad_norms - target) * norms
    torch.testing.assert_close(weighting.task_weights, weights * 2 / weights.sum())


def test_must_train_help_lists_every_method() -> None:
    import argparse

    from must.stages import student

    parser = argparse.ArgumentParser()
    student.add_arguments(parser)
    text = " ".join(parser.format_help().split())
    assert all(f"{method}," in text or f"{method}." in text for method in METHODS)


def test_nash_mtl_solves_the_bargaining_equation() -> None:
    # Navon et al. 2022, Theorem 5.1: d = sum alpha_i g_i with g_i . d = 1 / alpha_i, i.e. every
    # alpha_i (G alpha)_i is equal (to 1; torchjd then caps |d| at 1, which scales them alike)
    if not available("nash_mtl"):
        pytest.skip("torchjd's solver for nash_mtl is not installed")
    jacobian = torch.tensor([[1.0, 0.0, 2.0], [-1.0, 1.0, 0.5], [0.3, -2.0, 1.0]])
    x = nn.Parameter(torch.zeros(3))
    weighting = build_weighting(WeightingConfig(method="nash_mtl"), ["t0", "t1", "t2"], 8, 0.1)
    weighting.backward({f"t{i}": row @ x for i, row in enumerate(jacobian)}, [x])
    alpha = torch.tensor([weighting.weights()[f"t{i}"] for i in range(3)])
    torch.testing.assert_close(x.grad, alpha @ jacobian)
    products = alpha * (jacobian @ x.grad)
    torch.testing.assert_close(products, products.mean().expand(3), rtol=1e-3, atol=1e-4)
    capped = float(x.grad.norm()) == pytest.approx(1.0, rel=1e-4)
    assert capped or float(products.mean()) == pytest.approx(1.0, rel=1e-3)
