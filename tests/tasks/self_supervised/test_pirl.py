"""PIRL: the memory-bank update, the once-estimated NCE normalizer, the loss as PIRL eq. 5 of
:func:`nce_loss`, the own-slot exclusion, training."""

import torch
import torch.nn.functional as F

from must.losses.nce import nce_loss
from must.tasks.self_supervised.pirl import PirlTask


def make_task() -> PirlTask:
    return PirlTask(view_size=48, tile_size=14, bank_size=8, num_negatives=16, embedding_dim=16, tile_dim=8)


def test_views(photos: list[torch.Tensor]) -> None:
    task = make_task()
    views = task.make_views(photos[0], torch.Generator().manual_seed(0), index=3)
    assert views["image"].shape == (3, 48, 48) and views["tiles"].shape == (9, 3, 14, 14)
    assert int(views["index"]) == 3


def test_bank_update_and_normalizer(photos, trunk, batch_of) -> None:
    task = make_task()
    batch = batch_of(task, photos)
    head = task.build_head(trunk.spec)
    index = batch.value["index"]
    assert len(set(index.tolist())) == 4
    before = head.bank.clone()
    output = task.forward_views(head, trunk.features, batch)
    expected = F.normalize(0.5 * before[index] + 0.5 * output["image"].detach(), dim=1)
    assert torch.allclose(head.bank[index], expected, atol=1e-6)
    untouched = torch.ones(8, dtype=torch.bool)
    untouched[index] = False
    assert torch.equal(head.bank[untouched], before[untouched])
    assert torch.equal(output["positive"], before[index])  # the loss reads the bank before the update
    normalizer = float(head.normalizer)
    assert normalizer > 0
    task.forward_views(head, trunk.features, batch)
    assert float(head.normalizer) == normalizer  # estimated once (Wu et al. 2018)
    head.eval()
    frozen = head.bank.clone()
    task.forward_views(head, trunk.features, batch)
    assert torch.equal(head.bank, frozen)  # evaluation never writes the bank


def test_loss_is_pirl_equation_5(photos, trunk, batch_of) -> None:
    task = make_task()
    task.transformed_weight = 0.3
    batch = batch_of(task, photos)
    output = task.forward_views(task.build_head(trunk.spec), trunk.features, batch)
    own = output["own"]
    assert torch.equal(own, own_entries(output))
    parts = {}
    for name in ("transformed", "image"):
        query = output[name]
        negatives = (query @ output["negatives"].T).masked_fill(own, float("-inf"))
        parts[name] = nce_loss((query * output["positive"]).sum(1), negatives, 8, output["normalizer"], 0.07)
    losses = task.loss(output, batch)
    assert torch.allclose(losses["loss"], 0.3 * parts["transformed"] + 0.7 * parts["image"])


def own_entries(output: dict[str, torch.Tensor]) -> torch.Tensor:
    """Which drawn negatives are a query's own (pre-update) bank entry."""
    return (output["negatives"][None, :, :] == output["positive"][:, None, :]).all(dim=-1)


def test_trains(photos, trunk, batch_of, train) -> None:
    task = make_task()
    curve = train(task, trunk, batch_of(task, photos), steps=30)
    assert curve.ratio < 0.5, curve
