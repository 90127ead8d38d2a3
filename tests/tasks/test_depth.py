"""Depth task: L1 and scale-and-shift invariant losses against numpy, NYU metrics against a
hand-worked example, pseudo label, warp, draw, overfit."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from must.errors import ConfigError
from must.data.geometry import Geometry
from must.models.features import Features, FeatureSpec
from must.tasks import build_task
from must.tasks.depth import DepthTask

from .conftest import overfit_losses

SPEC = FeatureSpec(c5_channels=16, fpn_channels=8)


def make_features(batch: int, size: tuple[int, int] = (32, 32)) -> Features:
    return Features.random(SPEC, batch, size)


def random_depths(count: int, size: tuple[int, int] = (6, 7)) -> list[torch.Tensor]:
    depths = [torch.rand(size, dtype=torch.float64) * 4 + 0.5 for _ in range(count)]
    for depth in depths:
        depth[0, :3] = 0  # invalid
    return depths


def naive_loss(predictions: np.ndarray, targets: list[np.ndarray | None], ssi: bool) -> float:
    errors = []
    for prediction, target in zip(predictions, targets):
        if target is None:
            continue
        valid = target > 0
        p, t = prediction[valid], target[valid]
        if ssi:
            (scale, shift), *_ = np.linalg.lstsq(np.stack([p, np.ones_like(p)], 1), t, rcond=None)
            p = scale * p + shift
        errors.extend(np.abs(p - t))
    return float(np.mean(errors))


@pytest.mark.parametrize("kind", ["l1", "ssi"])
def test_loss_matches_numpy_and_skips_absent(kind: str) -> None:
    task = DepthTask(loss=kind)
    depths = random_depths(2)
    targets = [depths[0], None, depths[1]]
    output = torch.rand(3, 1, 6, 7, dtype=torch.float64) * 5
    loss = task.loss(output, task.collate(targets))["loss"]
    numpy_targets = [None if t is None else t.numpy() for t in targets]
    assert loss.item() == pytest.approx(naive_loss(output[:, 0].numpy(), numpy_targets, kind == "ssi"), rel=1e-4)


@pytest.mark.parametrize(("scale", "shift"), [(0.5, 0.0), (3.0, -1.0), (1.0, 7.0)])
def test_ssi_loss_is_invariant_to_scale_and_shift(scale: float, shift: float) -> None:
    task = DepthTask(loss="ssi")
    target = task.collate(random_depths(2))
    output = torch.rand(2, 1, 6, 7, dtype=torch.float64) + 0.1
    reference = task.loss(output, target)["loss"]
    torch.testing.assert_close(task.loss(output * scale + shift, target)["loss"], reference)
    l1 = DepthTask(loss="l1")
    assert l1.loss(output * scale + shift, target)["loss"] != pytest.approx(l1.loss(output, target)["loss"].item())


def test_ssi_loss_of_a_constant_prediction_is_finite() -> None:
    task = DepthTask(loss="ssi")
    depths = random_depths(1)
    output = torch.full((1, 1, 6, 7), 2.0, requires_grad=True)
    loss = task.loss(output, task.collate(depths))["loss"]
    loss.backward()
    valid = depths[0][depths[0] > 0]
    assert loss.item() == pytest.approx((valid - valid.mean()).abs().mean().item(), rel=1e-5)  # s=0, t=mean
    assert torch.isfinite(output.grad).all()


def test_no_valid_pixel_gives_zero_loss_with_a_graph() -> None:
    task = DepthTask()
    head = task.build_head(SPEC)
    output = head(make_features(2))
    assert (output > 0).all() and output.shape == (2, 1, 32, 32)
    for target in (task.collate([None, None]), task.collate([torch.zeros(32, 32), None])):
        loss = task.loss(output, target)["loss"]
        assert loss.item() == 0.0 and loss.requires_grad


def test_metric_hand_worked_example() -> None:
    task = DepthTask()
    metric = task.metric()
    prediction = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]], [[[9.0, 9.0], [9.0, 9.0]]]])
    gt = torch.tensor([[1.0, 1.5], [4.0, 0.0]])  # ratios 1, 1.333, 1.333; one invalid pixel
    metric.update(prediction, task.collate([gt, None]))
    result = metric.compute()
    assert result["delta1"] == pytest.approx(1 / 3)
    assert result["abs_rel"] == pytest.approx((0 + 0.5 / 1.5 + 1 / 4) / 3)
    assert result["rmse"] == pytest.approx(np.sqrt((0 + 0.25 + 1) / 3))


def test_metric_pools_pixels_over_batches_like_numpy() -> None:
    metric = DepthTask().metric()
    predictions, targets = [], []
    for _ in range(3):
        depths = random_depths(2)
        output = torch.rand(2, 1, 6, 7) * 4 + 0.5
        metric.update(output, DepthTask().collate(depths))
        predictions.append(output[:, 0].numpy())
        targets.append(torch.stack(depths).numpy())
    p, t = np.concatenate(predictions), np.concatenate(targets)
    valid = t > 0
    p, t = p[valid], t[valid]
    expected = {"delta1": np.mean(np.maximum(p / t, t / p) < 1.25), "abs_rel": np.mean(np.abs(p - t) / t),
                "rmse": np.sqrt(np.mean((p - t) ** 2))}
    assert metric.compute() == pytest.approx(expected, rel=1e-5)


def test_median_alignment_evaluates_relative_depth() -> None:
    gt = random_depths(1)[0].float()
    relative = (gt * 0.1)[None, None]  # right up to a scale
    plain, aligned = DepthTask().metric(), DepthTask(align="median").metric()
    plain.update(relative, DepthTask().collate([gt]))
    aligned.update(relative, DepthTask().collate([gt]))
    assert plain.compute()["delta1"] == 0.0
    assert aligned.compute() == pytest.approx({"delta1": 1.0, "abs_rel": 0.0, "rmse": 0.0}, abs=1e-5)


def test_ssi_task_evaluates_after_scale_and_shift_alignment() -> None:
    """An exact affine transform of the ground truth (negative shift, so neither the raw nor the
    median-scaled prediction is right) is perfect once aligned by least squares (MiDaS sec. 5)."""
    depths = random_depths(2)
    affine = torch.stack([0.3 * d - 0.2 for d in depths]).float()[:, None]
    target = DepthTask().collate(depths)
    ssi = DepthTask(loss="ssi")
    assert ssi.align == "scale_shift" and DepthTask().align == "none"
    metric = ssi.metric()
    metric.update(affine, target)
    assert metric.compute() == pytest.approx({"delta1": 1.0, "abs_rel": 0.0, "rmse": 0.0}, abs=1e-5)
    for align in ("none", "median"):
        other = DepthTask(loss="ssi", align=align).metric()
        other.update(affine, target)
        assert other.compute()["delta1"] < 0.9


def test_scale_and_shift_alignment_hand_worked_example() -> None:
    """pred (0, 1, 2, 3), gt (1, 3, 4, 6): s = cov / var = 8 / 5, t = 3.5 - 1.6 * 1.5 = 1.1, so the
    aligned prediction is (1.1, 2.7, 4.3, 5.9); the invalid pixel takes no part in the fit."""
    prediction = torch.tensor([[[[0.0, 1.0, 50.0], [2.0, 3.0, 50.0]]]])
    gt = torch.tensor([[1.0, 3.0, 0.0], [4.0, 6.0, 0.0]])
    metric = DepthTask(align="scale_shift").metric()
    metric.update(prediction, DepthTask().collate([gt]))
    result = metric.compute()
    assert result["delta1"] == 1.0
    assert result["abs_rel"] == pytest.approx((0.1 / 1 + 0.3 / 3 + 0.3 / 4 + 0.1 / 6) / 4, rel=1e-9)
    assert result["rmse"] == pytest.approx(np.sqrt((0.01 + 0.09 + 0.09 + 0.01) / 4), rel=1e-9)


def test_unknown_alignment_is_refused_by_name() -> None:
    with pytest.raises(ConfigError, match="unknown depth alignment 'scale'.*scale_shift"):
        DepthTask(align="scale")  # type: ignore[arg-type]


def test_predict_and_pseudo_label_are_the_output_as_is() -> None:
    task = DepthTask()
    output = torch.rand(2, 1, 5, 6) + 1
    predictions = task.predict(output)
    assert predictions[1].shape == (5, 6) and predictions[1].dtype == torch.float32
    label = task.to_pseudo_label(predictions[1], threshold=0.5)
    torch.testing.assert_close(label, output[1, 0])


def test_transform_target_keeps_values_and_pads_invalid() -> None:
    task = DepthTask()
    depth = torch.arange(1, 41, dtype=torch.float32).reshape(5, 8)
    geometry = Geometry((5, 8), (10, 16), (-2, 4), (12, 12), flip=True)
    warped = task.transform_target(depth, geometry)
    assert warped.shape == (12, 12)
    assert set(warped.unique().tolist()) <= set(depth.flatten().tolist()) | {0.0}  # nearest, unscaled
    assert (warped[:2] == 0).all()  # padding above the image is invalid
    torch.testing.assert_close(warped, geometry.warp_dense(depth, "nearest", 0.0))
    # flip: the window's left column holds what was its right column without flipping
    unflipped = Geometry((5, 8), (10, 16), (-2, 4), (12, 12), flip=False)
    torch.testing.assert_close(warped, task.transform_target(depth, unflipped).flip(-1))


def test_draw() -> None:
    task = build_task("depth", loss="ssi")
    image = np.zeros((20, 24, 3), dtype=np.uint8)
    depth = torch.linspace(1, 5, 10 * 12).reshape(10, 12)
    depth[0, 0] = 0
    drawn = task.draw(image, depth)
    assert drawn.shape == image.shape and drawn.dtype == np.uint8
    np.testing.assert_array_equal(drawn[0, 0], [0, 0, 0])  # invalid: black
    assert not np.array_equal(drawn[-1, -1], drawn[5, 5])
    assert task.draw(image, torch.zeros(1, 10, 12)).shape == image.shape


@pytest.mark.parametrize("kind", ["l1", "ssi"])
def test_head_overfits_four_samples(kind: str) -> None:
    task = DepthTask(loss=kind, hidden_channels=16)
    head = task.build_head(SPEC)
    features = make_features(4)
    coarse = torch.rand(4, 1, 8, 8) * 3 + 1
    depth = F.interpolate(coarse, size=(32, 32), mode="bilinear", align_corners=False)[:, 0]
    depth[:, :3] = 0
    target = task.collate(list(depth))
    losses = overfit_losses(task, head, features, target, 300)
    assert losses[-1] < 0.1 * losses[0]
