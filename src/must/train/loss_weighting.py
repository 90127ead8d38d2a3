"""Loss-based weightings: L = sum_i w_i L_i with weights computed from the task losses' values
(DWA, RLW, FAMO) or, for GradNorm, also from the norms of the task gradients (so it builds on
:class:`~must.train.gradient_weighting.JacobianWeighting`).

Every weight is computed from the losses averaged over the processes whose batch holds the task
(:func:`~must.train.weighting_base.global_loss_values`), so every rank uses the same weights and
DDP's averaged gradient is the one a single process computes on the global batch (equal shares
per rank). A task missing from every batch of a step keeps its state; what each method then does
is said in its docstring. State that advances per optimizer step advances in
``synchronize_gradients`` (called once per step), from the mean of the step's micro-batch losses.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from must.train.gradient_weighting import JacobianWeighting
from must.train.weighting_base import Weighting, global_loss_values

EPSILON = 1e-8


class LossValueWeighting(Weighting):
    """Shared machinery: weights from loss values, one backward of the weighted sum."""

    def __init__(self, task_names: Sequence[str]) -> None:
        super().__init__(task_names)
        count = len(self.task_names)
        self.register_buffer("step_sum", torch.zeros(count))
        self.register_buffer("step_count", torch.zeros(count))
        self.last: dict[str, float] = {name: 1.0 for name in self.task_names}

    def current_weights(self, values: Tensor, present: Tensor) -> Tensor:
        """One weight per task of ``task_names`` for this micro-step (detached)."""
        raise NotImplementedError

    def end_step(self, means: Tensor, present: Tensor) -> None:
        """Advances the state after an optimizer step; ``means`` are the step's losses."""

    def backward(self, losses: Mapping[str, Tensor], shared_parameters: Sequence[nn.Parameter],
                 scale: float = 1.0) -> Tensor:
        self._check(losses)
        device = next(iter(losses.values())).device
        values, present = global_loss_values(losses, self.task_names, device)
        weights = self.current_weights(values, present).to(device)
        self.last = {name: float(weight) for name, weight in zip(self.task_names, weights.tolist())}
        self.step_sum += torch.where(present, values, 0.0).to(self.step_sum.device)
        self.step_count += present.float().to(self.step_count.device)
        total = sum(weights[self.task_names.index(name)] * loss for name, loss in losses.items())
        (total * scale).backward()
        return total.detach()

    def synchronize_gradients(self, shared_parameters: Sequence[nn.Parameter]) -> None:
        super().synchronize_gradients(shared_parameters)
        present = self.step_count > 0
        self.end_step(self.step_sum / self.step_count.clamp_min(1.0), present)
        self.step_sum.zero_()
        self.step_count.zero_()

    def weights(self) -> dict[str, float]:
        return dict(self.last)

    def get_extra_state(self) -> dict[str, object]:
        return {"last": dict(self.last)}

    def set_extra_state(self, state: dict[str, object]) -> None:
        self.last = dict(state["last"])  # type: ignore[arg-type]


class DWAWeighting(LossValueWeighting):
    """Dynamic Weight Average (Liu, Johns & Davison, CVPR 2019, eq. 7):
    lambda_k(t) = K exp(w_k(t-1) / T) / sum_i exp(w_i(t-1) / T), w_k(t-1) = L_k(t-1) / L_k(t-2),
    with w_k = 1 until two averages exist. L_k(t) is the paper's per-epoch average loss; here the
    average over a window of ``window`` optimizer steps. A task's history only moves on a window
    that held it, so a task missing for a while compares its last two windows with data; the
    softmax runs over every task, present or not (weights of absent tasks are simply unused)."""

    def __init__(self, task_names: Sequence[str], temperature: float = 2.0, window: int = 1) -> None:
        super().__init__(task_names)
        self.temperature, self.window = temperature, window
        count = len(self.task_names)
        self.register_buffer("window_sum", torch.zeros(count))
        self.register_buffer("window_count", torch.zeros(count))
        self.register_buffer("window_steps", torch.zeros((), dtype=torch.long))
        self.register_buffer("history", torch.full((2, count), float("nan")))  # L(t-2), L(t-1)

    def current_weights(self, values: Tensor, present: Tensor) -> Tensor:
        ratio = self.history[1] / self.history[0]
        ratio = torch.where(torch.isfinite(ratio), ratio, torch.ones_like(ratio))
        return len(self.task_names) * torch.softmax(ratio / self.temperature, dim=0)

    def end_step(self, means: Tensor, present: Tensor) -> None:
        self.window_sum += torch.where(present, means, 0.0)
        self.window_count += present.float()
        self.window_steps += 1
        if int(self.window_steps) < self.window:
            return
        seen = self.window_count > 0
        average = self.window_sum / self.window_count.clamp_min(1.0)
        self.history.copy_(torch.where(seen, torch.stack([self.history[1], average]), self.history))
        self.window_sum.zero_()
        self.window_count.zero_()
        self.window_steps.zero_()


class RLWWeighting(LossValueWeighting):
    """Random Loss Weighting (Lin et al., TMLR 2022, sec. 3, eq. 4): each step,
    lambda = softmax(lambda~), lambda~ ~ N(0, I_K), drawn once per optimizer step for every task
    (absent tasks' weights are unused, not renormalized away). The draw comes from the strategy's
    own generator, seeded alike on every rank and saved in the state dict, so every rank uses the
    same weights and a resumed run draws what the uninterrupted one would have."""

    def __init__(self, task_names: Sequence[str], seed: int = 0) -> None:
        super().__init__(task_names)
        self.generator = torch.Generator().manual_seed(seed)
        self.drawn: Tensor | None = None

    def current_weights(self, values: Tensor, present: Tensor) -> Tensor:
        if self.drawn is None:
            self.drawn = torch.softmax(torch.randn(len(self.task_names), generator=self.generator), dim=0)
        return self.drawn

    def end_step(self, means: Tensor, present: Tensor) -> None:
        self.drawn = None

    def get_extra_state(self) -> dict[str, object]:
        return {**super().get_extra_state(), "generator": self.generator.get_state()}

    def set_extra_state(self, state: dict[str, object]) -> None:
        super().set_extra_state(state)
        self.generator.set_state(state["generator"])  # type: ignore[arg-type]


def softmax_vjp(logits: Tensor, vector: Tensor) -> Tensor:
    """J_z^T v for z = softmax(logits): z_i (v_i - sum_j z_j v_j)."""
    z = torch.softmax(logits, dim=0)
    return z * (vector - (z * vector).sum())


class FAMOWeighting(LossValueWeighting):
    """FAMO (Liu et al., NeurIPS 2023, Algorithm 1): logits xi, z = softmax(xi); the update is
    d = c sum_i (z_i / l_i) grad l_i with c = (sum_i z_i / l_i)^-1 (eq. 4), i.e. weights
    w_i = c z_i / l_i; after the step, xi <- xi - beta (J_z^T delta + gamma xi) with
    delta_i = log l_i(t) - log l_i(t+1) (the rate each loss decreased).

    The paper evaluates l(t+1) on the same batch after the update (an extra forward); a weighting
    sees losses only, so delta compares one step's mean loss with the next step's (next batch).
    z, c and the logit update run over the tasks present (in both steps, for delta); an absent
    task's logit only decays. ``beta``, ``gamma``: the paper's 0.025 and 0.001; plain steps as in
    Algorithm 1 (the authors' code uses Adam)."""

    def __init__(self, task_names: Sequence[str], beta: float = 0.025, gamma: float = 0.001) -> None:
        super().__init__(task_names)
        self.beta, self.gamma = beta, gamma
        count = len(self.task_names)
        self.register_buffer("logits", torch.zeros(count))
        self.register_buffer("previous", torch.full((count,), float("nan")))

    def current_weights(self, values: Tensor, present: Tensor) -> Tensor:
        logits = self.logits.to(values.device).masked_fill(~present, float("-inf"))
        z = torch.softmax(logits, dim=0)
        ratio = torch.where(present, z / (values + EPSILON), 0.0)
        return ratio / ratio.sum()

    def end_step(self, means: Tensor, present: Tensor) -> None:
        both = present & torch.isfinite(self.previous)
        delta = torch.where(both, torch.log(self.previous + EPSILON) - torch.log(means + EPSILON), 0.0)
        step = torch.zeros_like(self.logits)
        if bool(both.any()):
            step[both] = softmax_vjp(self.logits[both], delta[both])
        self.logits -= self.beta * (step + self.gamma * self.logits)
        self.previous.copy_(torch.where(present, means, self.previous))


class GradNormWeighting(JacobianWeighting):
    """GradNorm (Chen et al., ICML 2018, sec. 3.2): with G_i = ||grad_W w_i L_i||, mean G_bar,
    L~_i = L_i(t) / L_i(0) and r_i = L~_i / mean_j L~_j, the weights descend
    L_grad = sum_i |G_i - G_bar r_i^alpha| (eq. 2), the target G_bar r_i^alpha held constant, so
    d L_grad / d w_i = sign(G_i - target_i) ||grad_W L_i||; then renormalized to sum_i w_i = K.
    The loss is sum_i w_i L_i, with the weights before their update.

    W is every shared parameter (the paper takes the last shared layer; an FPN has none), so the
    per-task gradients are a Jacobian as for the torchjd methods, averaged over the processes
    before its norms are taken: every rank updates the same weights, as one process would. A
    missing task (no rank holds it) keeps its weight, and is left out of G_bar and r; L_i(0) is the
    task's first loss seen. Weights take plain steps of ``lr`` (clamped positive), per micro-step."""

    def __init__(self, task_names: Sequence[str], alpha: float = 1.5, lr: float = 0.025, seed: int = 0) -> None:
        super().__init__(task_names, seed)
        self.alpha, self.lr = alpha, lr
        count = len(self.task_names)
        self.register_buffer("task_weights", torch.ones(count))
        self.register_buffer("initial", torch.full((count,), float("nan")))
        self.values = torch.zeros(count)

    def loss_weights(self) -> dict[str, float]:
        return {name: float(value) for name, value in zip(self.task_names, self.task_weights.tolist())}

    def backward(self, losses: Mapping[str, Tensor], shared_parameters: Sequence[nn.Parameter],
                 scale: float = 1.0) -> Tensor:
        self._check(losses)
        values, present = global_loss_values(losses, self.task_names, next(iter(losses.values())).device)
        self.values = values.to(self.initial.device)
        self.initial.copy_(torch.where(present.to(self.initial.device) & torch.isnan(self.initial),
                                       self.values, self.initial))
        return super().backward(losses, shared_parameters, scale)

    def aggregate(self, jacobian: Tensor, present: Sequence[str]) -> Tensor:
        index = torch.tensor([self.task_names.index(name) for name in present], device=self.initial.device)
        weights = self.task_weights[index].to(jacobian.device)
        combined = weights @ jacobian
        norms = jacobian.norm(dim=1).to(self.initial.device)
        grad_norms = self.task_weights[index] * norms
        relative = self.values[index] / self.initial[index]
        target = grad_norms.mean() * (relative / relative.mean()) ** self.alpha
        step = torch.sign(grad_norms - target) * norms
        updated = self.task_weights.clone()
        updated[index] = (self.task_weights[index] - self.lr * step).clamp_min(EPSILON)
        self.task_weights.copy_(updated * len(self.task_names) / updated.sum())
        return combined

    def weights(self) -> dict[str, float]:
        return self.loss_weights()
