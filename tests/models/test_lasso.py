"""Lasso mixing (Doersch & Zisserman 2017 sec. 4.2): shapes, the penalty, and the selection it
learns: a strong L1 weight keeps only each task's best unit, weight 0 keeps every unit; the same
for the pixel heads' weights over the pyramid levels, which start at today's fused P2; no weight
decay on the mixing weights."""

from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F

from must.models import ModelConfig, MultiTaskModel, build_model
from must.models.features import Features
from must.models.lasso import LassoMixing, PyramidLasso, read_lasso_matrix
from must.tasks.classification import ClassificationTask
from must.tasks.depth import DepthTask
from must.tasks.segmentation import SegmentationTask
from must.tasks.self_supervised.doersch import DoerschMultiTaskModel
from must.train.optim import parameter_groups

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


# Pixel heads: a lasso over the pyramid levels fused at P2 (Doersch & Zisserman sec. 4.2 on MuST
# sec. 3.3's fused P2).

LEVELS = ("p2", "p3", "p4", "p5", "p6", "p7")


def pyramid_features(generator: torch.Generator, batch: int = 2, channels: int = 4) -> Features:
    pyramid = OrderedDict((level, torch.randn(batch, channels, max(1, 16 >> index), max(1, 16 >> index),
                                              generator=generator))
                          for index, level in enumerate(LEVELS))
    return Features((64, 64), OrderedDict(), pyramid)


def test_untrained_pyramid_lasso_is_the_plain_fused_p2() -> None:
    features = pyramid_features(torch.Generator().manual_seed(0))
    lasso = PyramidLasso(["depth", "segmentation"], LEVELS, l1_weight=0.5)
    weighted = features.with_level_weights(lasso.weights("depth"))
    assert torch.equal(weighted.fused_p2, features.fused_p2)  # bit for bit
    assert weighted.select(torch.tensor([1])).level_weights is weighted.level_weights
    assert torch.allclose(lasso.task_penalty("depth"), torch.tensor(0.5 * 6))
    assert lasso.matrix.shape == (2, 6) and lasso.no_weight_decay() == {"alpha"}
    with pytest.raises(KeyError, match="rows: depth, segmentation"):
        lasso.weights("normals")


def test_a_row_weights_its_levels() -> None:
    features = pyramid_features(torch.Generator().manual_seed(1))
    lasso = PyramidLasso(["t"], LEVELS)
    with torch.no_grad():
        lasso.alpha.copy_(torch.tensor([[0.0, 2.0, 0.0, 0.0, 0.0, 0.0]]))
    fused = features.with_level_weights(lasso.weights("t")).fused_p2
    p3 = F.interpolate(features.pyramid["p3"], size=(16, 16), mode="bilinear", align_corners=False)
    assert torch.allclose(fused, 2.0 * p3)


def fit_pyramid(l1_weight: float, steps: int = 300) -> torch.Tensor:
    """A pixel regression task reads one channel of its fused P2; every level is a noisy copy of
    the target at a different gain (as :func:`fit` above, at one resolution)."""
    torch.manual_seed(0)
    lasso = PyramidLasso(["depth"], LEVELS, l1_weight=l1_weight)
    optimizer = torch.optim.Adam(lasso.parameters(), lr=0.03)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    gains = GAINS["a"]
    for _ in range(steps):
        signal = torch.randn(16, 1, 8, 8)
        pyramid = OrderedDict((level, gains[index] * signal + torch.randn(16, 1, 8, 8))
                              for index, level in enumerate(LEVELS))
        fused = Features((8, 8), OrderedDict(), pyramid).with_level_weights(lasso.weights("depth")).fused_p2
        loss = ((fused - signal) ** 2).mean() + lasso.penalty()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    return lasso.matrix.abs()[0]


def test_strong_l1_keeps_the_pixel_tasks_best_level() -> None:
    dense = fit_pyramid(0.0)
    assert (dense > 0.05).all(), dense
    sparse = fit_pyramid(1.0)
    # the weak levels leave, the cleanest (p2) stays the largest
    assert (sparse[2:] < 0.01).all() and sparse.argmax() == 0 and sparse[0] > 0.1, sparse


def pixel_model(lasso_weight: float | None) -> DoerschMultiTaskModel:
    torch.manual_seed(0)
    tasks = [SegmentationTask(3, hidden_channels=8), DepthTask(hidden_channels=8), ClassificationTask(4)]
    model = build_model(ModelConfig(backbone="resnet18", width=0.125, fpn_channels=8),
                        {task.name: task for task in tasks})
    return DoerschMultiTaskModel(model, lasso_weight, harmonized=False).eval()


def test_pixel_heads_get_pyramid_rows_that_learn_from_their_task() -> None:
    model = pixel_model(1e-3)
    assert model.pyramid_lasso is not None and model.pyramid_lasso.task_names == ["segmentation", "depth"]
    assert model.lasso is not None and model.lasso.task_names == ["classification"]
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    outputs = model(images, tasks=["depth"])
    (outputs["depth"].sum() + model.penalty("depth")).backward()
    gradient = model.pyramid_lasso.alpha.grad
    assert gradient[1].abs().min() > 0 and gradient[0].abs().sum() == 0
    assert model.penalty("depth") > 0 and model.penalty("classification") > 0
    assert model.record()["lasso_rows"]["pyramid_lasso"] == {"tasks": ["segmentation", "depth"],
                                                             "units": list(LEVELS)}


def test_untrained_lasso_and_no_lasso_compute_todays_pixel_outputs() -> None:
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    plain = pixel_model(None)
    reference = MultiTaskModel(plain.backbone, plain.fpn, plain.heads).eval()
    expected = reference(images)
    for model in (plain, pixel_model(1e-3)):
        outputs = model(images)
        for name in ("segmentation", "depth"):
            assert torch.equal(outputs[name], expected[name]), name
    assert torch.equal(plain(images)["classification"], expected["classification"])


def test_lasso_weights_are_exempt_from_weight_decay() -> None:
    model = pixel_model(1e-3)
    groups = parameter_groups(model, 1e-4)
    decay = {id(p) for group in groups if group["weight_decay"] > 0 for p in group["params"]}
    assert id(model.lasso.alpha) not in decay and id(model.pyramid_lasso.alpha) not in decay
    assert id(model.lasso.projections[0].weight) in decay and id(model.fpn.layer_blocks[0][0].weight) in decay
    assert sum(len(group["params"]) for group in groups) == len(list(model.parameters()))


def test_read_lasso_matrix_lays_out_tasks_by_levels() -> None:
    model = pixel_model(1e-3)
    table = read_lasso_matrix({"model": model.state_dict(), "model_record": model.record()})
    assert table is not None and table["tasks"] == ["classification", "segmentation", "depth"]
    assert table["units"] == ["c2", "c3", "c4", "c5", *LEVELS]
    alpha = torch.tensor(table["alpha"])
    assert alpha.shape == (3, 10)
    assert torch.equal(alpha[0, :4], torch.full((4,), 0.25)) and alpha[0, 4:].isnan().all()
    assert alpha[1:, :4].isnan().all() and torch.equal(alpha[1:, 4:], torch.ones(2, 6))
    assert read_lasso_matrix({"model": pixel_model(None).state_dict()}) is None
