"""Normals task: angular / cosine losses against a plain loop, angle metrics against a hand-worked
example, flip negates x, draw, overfit."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from must.data.geometry import Geometry
from must.models.features import Features, FeatureSpec
from must.tasks import build_task
from must.tasks.normals import NormalsTask

from .conftest import overfit_losses

SPEC = FeatureSpec(c5_channels=16, fpn_channels=8)


def make_features(batch: int, size: tuple[int, int] = (32, 32)) -> Features:
    return Features.random(SPEC, batch, size)


def random_normals(count: int, size: tuple[int, int] = (4, 5)) -> list[torch.Tensor]:
    normals = [F.normalize(torch.randn(3, *size, dtype=torch.float64), dim=0) for _ in range(count)]
    for field in normals:
        field[:, 0, :2] = 0  # invalid
    return normals


@pytest.mark.parametrize("kind", ["angular", "cosine"])
def test_loss_matches_naive_loop_and_skips_absent(kind: str) -> None:
    task = NormalsTask(loss=kind)
    normals = random_normals(2)
    output = F.normalize(torch.randn(3, 3, 4, 5, dtype=torch.float64), dim=1)
    loss = task.loss(output, task.collate([normals[0], None, normals[1]]))["loss"]
    errors = []
    for prediction, target in zip(output[[0, 2]].numpy(), normals):
        target = target.numpy()
        for row in range(4):
            for col in range(5):
                t, p = target[:, row, col], prediction[:, row, col]
                if np.linalg.norm(t) <= 0.5:
                    continue
                cos = np.dot(p, t) / (np.linalg.norm(p) * np.linalg.norm(t))
                errors.append(math.acos(np.clip(cos, -1, 1)) if kind == "angular" else 1 - cos)
    assert loss.item() == pytest.approx(np.mean(errors), rel=1e-6)


def test_angular_loss_gradient_is_finite_at_zero_error() -> None:
    task = NormalsTask()
    target = random_normals(1)[0].float()
    output = target.clone()[None]
    output[:, :, 0, :2] = torch.tensor([0.0, 0.0, 1.0])[None, :, None]
    output.requires_grad_(True)
    loss = task.loss(output, task.collate([target]))["loss"]
    loss.backward()
    # the clamp inside acos leaves a floor of acos(1 - 1e-6) = 1.4e-3 rad (0.08 degrees)
    assert loss.item() < 2e-3 and torch.isfinite(output.grad).all()


def test_no_valid_pixel_gives_zero_loss_with_a_graph() -> None:
    task = NormalsTask()
    head = task.build_head(SPEC)
    output = head(make_features(2))
    torch.testing.assert_close(output.norm(dim=1), torch.ones(2, 32, 32))
    for target in (task.collate([None, None]), task.collate([torch.zeros(3, 32, 32), None])):
        loss = task.loss(output, target)["loss"]
        assert loss.item() == 0.0 and loss.requires_grad


def test_metric_hand_worked_example() -> None:
    task = NormalsTask()
    metric = task.metric()
    angles = torch.deg2rad(torch.tensor([0.0, 10.0, 20.0, 40.0]))
    prediction = torch.stack([torch.sin(angles), torch.zeros(4), torch.cos(angles)])  # tilted about y
    target = torch.zeros(3, 1, 5)
    target[2, 0, :4] = 1.0  # pixel 5 invalid
    output = torch.stack([prediction, torch.zeros(3, 4)]).reshape(2, 3, 1, 4)
    output = torch.cat([output, torch.tensor([0.0, 0.0, 1.0]).reshape(1, 3, 1, 1).expand(2, 3, 1, 1)], dim=3)
    metric.update(output, task.collate([target, None]))
    result = metric.compute()
    assert result == pytest.approx({"within_11_25": 0.5, "within_22_5": 0.75, "within_30": 0.75,
                                    "mean_angle": 17.5}, abs=1e-4)


def test_metric_matches_numpy() -> None:
    task = NormalsTask()
    metric = task.metric()
    output = F.normalize(torch.randn(2, 3, 4, 5), dim=1)
    normals = [n.float() for n in random_normals(2)]
    metric.update(output, task.collate(normals))
    target = torch.stack(normals).numpy()
    prediction = output.numpy()
    valid = np.linalg.norm(target, axis=1) > 0.5
    cos = (prediction * target).sum(1)[valid] / np.linalg.norm(target, axis=1)[valid]
    degrees = np.degrees(np.arccos(np.clip(cos, -1, 1)))
    expected = {"within_11_25": np.mean(degrees < 11.25), "within_22_5": np.mean(degrees < 22.5),
                "within_30": np.mean(degrees < 30), "mean_angle": degrees.mean()}
    assert metric.compute() == pytest.approx(expected, rel=1e-4, abs=1e-4)


def test_transform_target_flip_negates_x_and_stays_aligned() -> None:
    task = NormalsTask()
    normals = random_normals(1, (6, 8))[0].float()
    flipped = Geometry((6, 8), (12, 16), (2, 1), (10, 10), flip=True)
    plain = Geometry((6, 8), (12, 16), (2, 1), (10, 10), flip=False)
    warped, reference = task.transform_target(normals, flipped), task.transform_target(normals, plain)
    torch.testing.assert_close(warped[0], -reference[0].flip(-1))
    torch.testing.assert_close(warped[1:], reference[1:].flip(-1))
    # each channel moves exactly like a label map warped by the same geometry
    torch.testing.assert_close(reference, plain.warp_dense(normals, "nearest", 0.0))
    torch.testing.assert_close(warped[2], flipped.warp_dense(normals[2], "nearest", 0.0))


def test_predict_pseudo_label_and_draw() -> None:
    task = build_task("normals", loss="cosine")
    output = F.normalize(torch.randn(2, 3, 6, 7), dim=1)
    prediction = task.predict(output)[0]
    torch.testing.assert_close(task.to_pseudo_label(prediction), output[0])
    image = np.zeros((12, 14, 3), dtype=np.uint8)
    drawn = task.draw(image, prediction)
    assert drawn.shape == image.shape and drawn.dtype == np.uint8
    expected = np.round((prediction[:, 0, 0].numpy() + 1) / 2 * 255)
    np.testing.assert_array_equal(drawn[0, 0], expected)
    np.testing.assert_array_equal(task.draw(image, torch.zeros(3, 6, 7)), image)  # invalid: black


def test_head_overfits_four_samples() -> None:
    task = NormalsTask(hidden_channels=16)
    head = task.build_head(SPEC)
    features = make_features(4)
    coarse = torch.randn(4, 3, 8, 8)
    normals = F.normalize(F.interpolate(coarse, size=(32, 32), mode="bilinear", align_corners=False), dim=1)
    normals[:, :, :3] = 0
    target = task.collate(list(normals))
    losses = overfit_losses(task, head, features, target, 300)
    assert losses[-1] < 0.1 * losses[0]
