"""Whether a run's losses reach every parameter: the probe that lets DDP skip its per-step search
for unused parameters, and leaves the model and the random generators untouched."""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping

import torch
from torch import Tensor, nn

from must.data.sample import Batch
from must.train.parameter_use import reaches_every_parameter


class TwoHeads(nn.Module):
    """A trunk with batch norm and dropout (state and randomness the probe must not disturb) and
    two heads; ``spare`` is computed but read by no loss (like an FPN a classification head skips)."""

    def __init__(self) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Dropout(0.5))
        self.spare = nn.Linear(4, 4)
        self.heads = nn.ModuleDict({"a": nn.Linear(4, 1), "b": nn.Linear(4, 1)})

    def forward(self, images: Tensor, targets: object = None) -> dict[str, Tensor]:
        features = self.trunk(images)
        self.spare(features)
        return {name: head(features) for name, head in self.heads.items()}


def batches() -> Iterator[Batch]:
    generator = torch.Generator().manual_seed(0)
    while True:
        yield Batch(["k"] * 4, torch.randn(4, 3, generator=generator), {})


def losses_of(names: tuple[str, ...]):
    def losses(model: nn.Module, batch: Batch) -> Mapping[str, Tensor]:
        outputs = model(batch.images)
        return {name: outputs[name].square().mean() for name in names}
    return losses


def test_unreached_parameters_are_found_and_nothing_changes() -> None:
    model = TwoHeads()
    before = {key: value.clone() for key, value in model.state_dict().items()}
    torch.manual_seed(5)
    random.seed(5)
    expected = (torch.rand(1), random.random())
    torch.manual_seed(5)
    random.seed(5)
    cpu = torch.device("cpu")
    assert not reaches_every_parameter(model, batches, losses_of(("a", "b")), cpu)  # spare is never read
    assert not reaches_every_parameter(model, batches, losses_of(("a",)), cpu)
    model.spare.requires_grad_(False)  # frozen parameters are not DDP's to reduce
    assert reaches_every_parameter(model, batches, losses_of(("a", "b")), cpu)
    assert not reaches_every_parameter(model, batches, losses_of(("a",)), cpu)  # head b left out
    assert (torch.rand(1), random.random()) == expected  # every generator as it was
    for key, value in model.state_dict().items():  # the norm statistics too
        assert torch.equal(value, before[key]), key
