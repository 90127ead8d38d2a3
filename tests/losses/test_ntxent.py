"""NT-Xent against a naive double loop over SimCLR eq. 1, a hand-worked case, and a real 2-process
gloo run whose gathered negatives reproduce the one-process loss on the concatenated batch, with
the exact gradient through the gather."""

import math
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from must.losses.ntxent import contrastive_accuracy, nt_xent_loss


def naive_per_anchor(first: torch.Tensor, second: torch.Tensor, temperature: float) -> list[torch.Tensor]:
    """SimCLR eq. 1 term by term: anchors in the order first[0..N), second[0..N)."""
    views = torch.cat([first, second]).double()
    views = views / views.norm(dim=1, keepdim=True)
    count = first.shape[0]
    losses = []
    for i in range(2 * count):
        positive = (i + count) % (2 * count)
        numerator = torch.exp(views[i] @ views[positive] / temperature)
        denominator = sum(torch.exp(views[i] @ views[k] / temperature) for k in range(2 * count) if k != i)
        losses.append(-torch.log(numerator / denominator))
    return losses


@pytest.mark.parametrize("temperature", [0.1, 0.5, 1.0])
def test_matches_double_loop(temperature: float) -> None:
    first, second = torch.randn(6, 5), torch.randn(6, 5)
    expected = torch.stack(naive_per_anchor(first, second, temperature)).mean()
    assert torch.allclose(nt_xent_loss(first, second, temperature), expected.float(), atol=1e-5)


def test_hand_worked_orthogonal_pairs() -> None:
    """Two images, both views equal and orthogonal to the other image's: each anchor sees its
    positive at similarity 1 and two negatives at 0, so l = log(1 + 2 exp(-1 / T))."""
    views = torch.eye(2)
    for temperature in (0.1, 0.5):
        expected = math.log(1 + 2 * math.exp(-1 / temperature))
        assert nt_xent_loss(views, views, temperature).item() == pytest.approx(expected, rel=1e-3, abs=1e-6)


def test_scale_invariant_and_symmetric() -> None:
    first, second = torch.randn(4, 8), torch.randn(4, 8)
    loss = nt_xent_loss(first, second)
    assert torch.allclose(nt_xent_loss(3 * first, 0.5 * second), loss, atol=1e-6)
    assert torch.allclose(nt_xent_loss(second, first), loss, atol=1e-6)


def test_gradient_pulls_positives_together() -> None:
    first = torch.randn(4, 8, requires_grad=True)
    second = torch.randn(4, 8)
    before = F.cosine_similarity(first, second).mean()
    nt_xent_loss(first, second).backward()
    with torch.no_grad():
        stepped = first - 0.5 * first.grad
    assert F.cosine_similarity(stepped, second).mean() > before


def test_contrastive_accuracy() -> None:
    views = torch.eye(4)
    assert float(contrastive_accuracy(views, views + 0.01)) == 1.0
    assert float(contrastive_accuracy(views, views.roll(1, dims=0))) == 0.0


def test_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        nt_xent_loss(torch.randn(3, 4), torch.randn(2, 4))
    with pytest.raises(ValueError):
        nt_xent_loss(torch.randn(3, 4), torch.randn(3, 4), temperature=0.0)


WORKER = textwrap.dedent(
    """
    import json, sys, torch
    from must import distributed
    from must.losses.ntxent import nt_xent_loss
    info = distributed.setup(torch.device("cpu"))
    generator = torch.Generator().manual_seed(7)
    first, second = torch.randn(8, 5, generator=generator), torch.randn(8, 5, generator=generator)
    results = {}
    for name, split in {"equal": 4, "uneven": 3, "empty": 0}.items():
        rows = slice(0, split) if info.rank == 0 else slice(split, 8)
        local_first = first[rows].clone().requires_grad_(True)
        local_second = second[rows].clone().requires_grad_(True)
        loss = nt_xent_loss(local_first, local_second, temperature=0.2)
        loss.backward()
        results[name] = {"loss": loss.item(), "grad_first": local_first.grad.tolist(),
                         "grad_second": local_second.grad.tolist()}
    with open(sys.argv[1] + f"/rank{info.rank}.json", "w") as f:
        json.dump(results, f)
    distributed.teardown()
    """
)


def test_two_process_gloo_equals_one_process(tmp_path: Path, run_worker) -> None:
    results = run_worker(WORKER, tmp_path)
    generator = torch.Generator().manual_seed(7)
    first, second = torch.randn(8, 5, generator=generator), torch.randn(8, 5, generator=generator)
    whole = nt_xent_loss(first, second, temperature=0.2).item()
    # Equal per-rank batches: the mean of the ranks' losses is the loss of the whole batch.
    assert (results[0]["equal"]["loss"] + results[1]["equal"]["loss"]) / 2 == pytest.approx(whole, rel=1e-5)
    # Uneven batches: the ranks' losses weighted by their anchor counts give the whole loss.
    uneven = (3 * results[0]["uneven"]["loss"] + 5 * results[1]["uneven"]["loss"]) / 8
    assert uneven == pytest.approx(whole, rel=1e-5)
    # A rank without views joins the gather with nothing; the other sees the whole batch.
    assert results[0]["empty"]["loss"] == 0.0
    assert results[1]["empty"]["loss"] == pytest.approx(whole, rel=1e-5)

    # The gather's gradient is exact: each rank's views get the gradient of the sum of every
    # rank's loss (its own anchors' mean), not only of its own loss.
    for name, split in {"equal": 4, "uneven": 3, "empty": 0}.items():
        leaf_first, leaf_second = first.clone().requires_grad_(True), second.clone().requires_grad_(True)
        per_anchor = naive_per_anchor(leaf_first, leaf_second, 0.2)
        total = 0.0
        for local in (range(0, split), range(split, 8)):
            if local:
                total = total + torch.stack([per_anchor[a] for a in [*local, *(8 + i for i in local)]]).mean()
        total.backward()
        for rank, result in enumerate(results):
            rows = slice(0, split) if rank == 0 else slice(split, 8)
            assert torch.allclose(torch.tensor(result[name]["grad_first"]).view(-1, 5),
                                  leaf_first.grad[rows].float(), atol=1e-5)
            assert torch.allclose(torch.tensor(result[name]["grad_second"]).view(-1, 5),
                                  leaf_second.grad[rows].float(), atol=1e-5)


@pytest.mark.parametrize("temperature", [0.1, 0.5])
def test_equals_lightlys_ntxent(temperature: float) -> None:
    """Our NT-Xent and lightly's ``NTXentLoss`` (no memory bank) on the same embeddings."""
    from lightly.loss import NTXentLoss
    first, second = torch.randn(6, 5), torch.randn(6, 5)
    expected = NTXentLoss(temperature=temperature)(first, second)
    assert torch.allclose(nt_xent_loss(first, second, temperature), expected, atol=1e-5)
