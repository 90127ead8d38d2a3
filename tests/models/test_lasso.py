"""Lasso mixing (Doersch & Zisserman 2017 sec. 4.2): shapes, the penalty, and the selection it
learns: a strong L1 weight keeps only each task's best unit, weight 0 keeps every unit."""

import pytest
import torch

from must.models.lasso import LassoMixing

CHANNELS = (4, 6, 8, 5, 7, 3)
GAINS = {"a": torch.tensor([1.0, 0.8, 0.7, 0.6, 0.5, 0.4]), "b": torch.tensor([0.4, 0.5, 0.6, 0.7, 0.8, 1.0])}
"""How strongly each unit carries task a's signal (channel 0) and task b's (channel 1)."""


def test_mixes_units_of_different_shapes() -> None:
    lasso = LassoMixing(["a", "b"], (4, 8), width=6, l1_weight=0.5, unit_names=("c4", "c5"))
    units = [torch.randn(2, 4, 8, 8), torch.randn(2, 8, 4, 4)]
    mixed = lasso(units, "a")
    assert mixed.shape == (2, 6, 4, 4)  # the last unit's size by default
    assert lasso(units, "b", size=(8, 8)).shape == (2, 6, 8, 8)
    assert lasso.matrix.shape == (2, 2) and lasso.unit_names == ["c4", "c5"]
    assert torch.allclose(lasso.penalty(), torch.tensor(0.5 * 4 * 0.5))  # 4 entries of 1/2
    with pytest.raises(KeyError, match="rows: a, b"):
        lasso(units, "c")
    with pytest.raises(ValueError):
        lasso(units[:1], "a")
    with pytest.raises(ValueError):
        LassoMixing(["a", "a"], (4,), width=2)


def test_each_row_is_its_tasks_combination() -> None:
    lasso = LassoMixing(["a", "b"], (3, 3), width=3)
    with torch.no_grad():
        lasso.alpha.copy_(torch.tensor([[1.0, 0.0], [0.0, 2.0]]))
    units = [torch.randn(1, 3, 4, 4), torch.randn(1, 3, 4, 4)]
    only_second = lasso(units, "b")
    units[0] = torch.randn(1, 3, 4, 4)  # task b does not read unit 0
    assert torch.allclose(lasso(units, "b"), only_second)
    lasso(units, "a").sum().backward()
    assert lasso.alpha.grad[1].abs().sum() == 0 and lasso.alpha.grad[0, 0] != 0


def fit(l1_weight: float, steps: int = 150) -> torch.Tensor:
    """Two regression tasks read a fixed channel of their mixture (a head that cannot rescale,
    so the target's scale must come through alpha: the lasso regression problem). Every unit is a
    noisy copy of both signals, with the gains above."""
    torch.manual_seed(0)
    lasso = LassoMixing(["a", "b"], CHANNELS, width=8, l1_weight=l1_weight)
    optimizer = torch.optim.Adam(lasso.parameters(), lr=0.03)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    for _ in range(steps):
        signals = {"a": torch.randn(16, 1, 8, 8), "b": torch.randn(16, 1, 8, 8)}
        units = []
        for index, channels in enumerate(CHANNELS):
            unit = torch.randn(16, channels, 8, 8)
            unit[:, :1] += GAINS["a"][index] * signals["a"]
            unit[:, 1:2] += GAINS["b"][index] * signals["b"]
            units.append(unit)
        loss = lasso.penalty()
        for channel, task in enumerate("ab"):
            loss = loss + ((lasso(units, task)[:, channel:channel + 1] - signals[task]) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    return lasso.matrix.abs()


def test_strong_l1_selects_the_best_unit_and_zero_keeps_all() -> None:
    dense = fit(0.0)
    assert (dense > 0.05).all(), dense  # every unit helps average the noise away
    sparse = fit(1.0)
    assert (sparse < 0.01).float().mean() >= 0.8, sparse
    assert sparse[0].argmax() == 0 and sparse[1].argmax() == 5  # each task's cleanest unit
    assert (sparse.max(dim=1).values > 0.05).all()
