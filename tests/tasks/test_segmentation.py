"""Segmentation task: CE with ignore against a plain loop, mIoU against a hand-worked example and a
numpy confusion matrix, pseudo-label threshold, joint warp with the image, draw, overfit."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from must.data.geometry import Geometry
from must.data.sample import IGNORE_INDEX
from must.models.features import Features, FeatureSpec
from must.tasks import build_task
from must.tasks.segmentation import SegmentationTask, palette

from .conftest import overfit_losses

SPEC = FeatureSpec(c5_channels=16, fpn_channels=8)


def make_features(batch: int, size: tuple[int, int] = (32, 32)) -> Features:
    return Features.random(SPEC, batch, size)


def test_loss_matches_naive_loop_and_skips_absent_and_ignored() -> None:
    task = SegmentationTask(3)
    labels = torch.randint(0, 3, (2, 4, 5))
    labels[0, 0, :] = IGNORE_INDEX
    logits = torch.randn(3, 3, 4, 5, dtype=torch.float64)
    loss = task.loss(logits, task.collate([labels[0], None, labels[1]]))["loss"]
    total, count = 0.0, 0
    for image, label_map in zip(logits[[0, 2]].numpy(), labels.numpy()):
        for row in range(4):
            for col in range(5):
                label = label_map[row, col]
                if label == IGNORE_INDEX:
                    continue
                scores = image[:, row, col]
                total += np.log(np.exp(scores).sum()) - scores[label]
                count += 1
    assert float(loss) == pytest.approx(total / count, rel=1e-6)


def test_nothing_labeled_gives_zero_loss_with_a_graph() -> None:
    task = SegmentationTask(3)
    head = task.build_head(SPEC)
    output = head(make_features(2))
    for target in (task.collate([None, None]), task.collate([torch.full((32, 32), IGNORE_INDEX), None])):
        loss = task.loss(output, target)["loss"]
        assert loss.item() == 0.0 and loss.requires_grad


def test_collate() -> None:
    task = SegmentationTask(3)
    batch = task.collate([torch.zeros(2, 3, dtype=torch.uint8), None])
    assert batch.value.dtype == torch.int64 and batch.present.tolist() == [True, False]
    assert (batch.value[1] == IGNORE_INDEX).all()
    assert task.collate([None, None, None]).value.shape == (3, 0, 0)
    with pytest.raises(ValueError, match="different shapes"):
        task.collate([torch.zeros(2, 3), torch.zeros(3, 3)])


def numpy_miou(predictions: np.ndarray, labels: np.ndarray, classes: int) -> tuple[float, float]:
    keep = labels != IGNORE_INDEX
    confusion = np.bincount(labels[keep] * classes + predictions[keep], minlength=classes**2).reshape(classes, classes)
    intersection = np.diag(confusion)
    union = confusion.sum(0) + confusion.sum(1) - intersection
    return float(np.mean(intersection[union > 0] / union[union > 0])), float(intersection.sum() / keep.sum())


def test_metric_hand_worked_example() -> None:
    task = SegmentationTask(4)
    metric = task.metric()
    predicted = torch.tensor([[0, 0, 1, 1], [0, 2, 2, 1]])
    labels = torch.tensor([[0, 0, 1, IGNORE_INDEX], [1, 1, 2, 1]])
    logits = F.one_hot(predicted, 4).permute(2, 0, 1).float()[None]
    metric.update(logits, task.collate([labels]))
    # the ignored pixel counts for nobody (its prediction 1 included): class 0: I=2, U=3;
    # class 1: I=2, U=2+4-2=4; class 2: I=1, U=2; class 3 absent everywhere: not averaged
    result = metric.compute()
    assert result["miou"] == pytest.approx((2 / 3 + 2 / 4 + 1 / 2) / 3)
    assert result["pixel_accuracy"] == pytest.approx(5 / 7)


def test_metric_matches_numpy_over_batches_and_skips_absent() -> None:
    task = SegmentationTask(5)
    metric = task.metric()
    all_predictions, all_labels = [], []
    for _ in range(3):
        logits = torch.randn(3, 5, 6, 7)
        labels = [torch.randint(0, 5, (6, 7)), None, torch.randint(0, 5, (6, 7))]
        labels[0][0] = IGNORE_INDEX
        metric.update(logits, task.collate(labels))
        all_predictions += [logits[0].argmax(0), logits[2].argmax(0)]
        all_labels += [labels[0], labels[2]]
    expected = numpy_miou(torch.stack(all_predictions).numpy(), torch.stack(all_labels).numpy(), 5)
    result = metric.compute()
    assert (result["miou"], result["pixel_accuracy"]) == pytest.approx(expected)


def test_predict_and_pseudo_label_threshold() -> None:
    task = SegmentationTask(3)
    logits = torch.randn(2, 3, 4, 4) * 3
    predictions = task.predict(logits)
    assert predictions[0].shape == (3, 4, 4) and predictions[0].dtype == torch.float16
    torch.testing.assert_close(predictions[0].float().sum(0), torch.ones(4, 4), atol=2e-3, rtol=0)
    probabilities = torch.tensor([[[0.6, 0.3]], [[0.3, 0.45]], [[0.1, 0.25]]])  # [3, 1, 2]
    assert task.to_pseudo_label(probabilities).tolist() == [[0, IGNORE_INDEX]]
    assert task.to_pseudo_label(probabilities, threshold=0.4).tolist() == [[0, 1]]
    assert task.to_pseudo_label(probabilities, threshold=0.7).tolist() == [[IGNORE_INDEX, IGNORE_INDEX]]
    assert SegmentationTask(3, threshold=0.2).to_pseudo_label(probabilities).tolist() == [[0, 1]]


def test_transform_target_stays_aligned_with_the_image() -> None:
    task = SegmentationTask(4)
    blocks = torch.randint(0, 4, (5, 6))
    labels = blocks.repeat_interleave(8, 0).repeat_interleave(8, 1)  # [40, 48]
    image = torch.from_numpy(palette(4)[labels.numpy()]).permute(2, 0, 1)  # colour = label
    geometry = Geometry((40, 48), (60, 72), (-4, 10), (64, 64), flip=True)
    warped_labels = task.transform_target(labels, geometry)
    warped_image = geometry.warp_image(image).permute(1, 2, 0).numpy().astype(int)
    assert warped_labels.shape == (64, 64)
    padded = warped_labels == IGNORE_INDEX
    assert padded.any() and (warped_image[padded.numpy()] == 0).all()
    # away from label edges the image colour must be the label's colour
    window = F.max_pool2d(warped_labels[None, None].float(), 5, 1, 2)[0, 0]
    low = -F.max_pool2d(-warped_labels[None, None].float(), 5, 1, 2)[0, 0]
    interior = ((window == low) & ~padded).numpy()
    expected = palette(4)[warped_labels.numpy()[interior]].astype(int)
    assert interior.sum() > 1000
    assert np.abs(warped_image[interior] - expected).max() <= 2


def test_draw() -> None:
    task = build_task("segmentation", num_classes=3)
    image = np.full((20, 30, 3), 100, dtype=np.uint8)
    labels = torch.zeros(10, 15, dtype=torch.int64)
    labels[:, :5] = 2
    labels[0, -1] = IGNORE_INDEX
    drawn = task.draw(image, labels)
    assert drawn.shape == image.shape and drawn.dtype == np.uint8
    np.testing.assert_array_equal(drawn[0, -1], [100, 100, 100])  # ignored: untouched
    np.testing.assert_array_equal(drawn[10, 0], np.round(50 + palette(3)[2] / 2))
    from_probabilities = task.draw(image, F.one_hot(labels.clamp(max=2), 3).permute(2, 0, 1).half())
    assert from_probabilities.shape == image.shape
    assert len({tuple(color) for color in palette(256)}) == 256


def test_head_overfits_four_samples() -> None:
    task = SegmentationTask(4, hidden_channels=16)
    head = task.build_head(SPEC)
    features = make_features(4)
    # labels constant on P2's 4x4 cells: reachable through the bilinear upsampling
    labels = torch.randint(0, 4, (4, 8, 8)).repeat_interleave(4, 1).repeat_interleave(4, 2)
    labels[:, :2] = IGNORE_INDEX
    target = task.collate(list(labels))
    losses = overfit_losses(task, head, features, target, 200)
    assert losses[-1] < 0.1 * losses[0]
