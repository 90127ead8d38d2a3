"""NCE against the formula written out term by term (Wu et al. 2018 sec. 3.2; PIRL eq. 3-4; the
lecture's L_NCE(f1, f2) = -log h(f1, f2) - sum_f' log(1 - h(f', f2)))."""

import math

import pytest
import torch

from must.losses.nce import estimate_normalizer, nce_loss


def naive(positive: torch.Tensor, negatives: torch.Tensor, num_data: int, normalizer: float,
          temperature: float, count: int | None = None) -> float:
    noise = (count if count is not None else negatives.shape[1]) / num_data
    total = 0.0
    for b in range(positive.shape[0]):
        p = math.exp(float(positive[b]) / temperature) / normalizer
        total -= math.log(p / (p + noise))
        for s in negatives[b]:
            if math.isinf(float(s)):
                continue
            q = math.exp(float(s) / temperature) / normalizer
            total -= math.log(1 - q / (q + noise))
    return total / positive.shape[0]


@pytest.mark.parametrize("temperature", [0.07, 0.5])
def test_matches_formula(temperature: float) -> None:
    positive = torch.rand(5) * 2 - 1
    negatives = torch.rand(5, 7) * 2 - 1
    expected = naive(positive, negatives, 100, 250.0, temperature)
    assert nce_loss(positive, negatives, 100, 250.0, temperature).item() == pytest.approx(expected, rel=1e-5)


def test_excluded_negatives_contribute_nothing() -> None:
    """A ``-inf`` similarity (a query's own slot) drops out; the noise ratio m / n keeps m."""
    positive, negatives = torch.rand(3), torch.rand(3, 6)
    negatives[0, 2] = negatives[2, 5] = float("-inf")
    expected = naive(positive, negatives, 50, 80.0, 0.1, count=6)
    assert nce_loss(positive, negatives, 50, 80.0, 0.1).item() == pytest.approx(expected, rel=1e-5)


def test_better_positive_lowers_loss() -> None:
    negatives = torch.zeros(2, 4)
    low = nce_loss(torch.tensor([0.1, 0.1]), negatives, 10, 10.0, 0.1)
    high = nce_loss(torch.tensor([0.9, 0.9]), negatives, 10, 10.0, 0.1)
    assert high < low


def test_estimate_normalizer() -> None:
    similarities = torch.rand(4, 8)
    expected = torch.exp(similarities / 0.07).mean() * 1000
    assert torch.allclose(estimate_normalizer(similarities, 1000, 0.07), expected)


def test_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError):
        nce_loss(torch.rand(3), torch.rand(2, 4), 10, 1.0)
