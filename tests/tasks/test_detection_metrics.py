import math

import numpy as np
import pytest
import torch
from torchmetrics.detection import MeanAveragePrecision

from must.data.sample import TaskBatch
from must.tasks.detection_metrics import (
    DetectionMetric,
    ImageBoxes,
    all_point_ap,
    class_precision_recall,
    coco_summary,
    eleven_point_ap,
    voc_ap50_11_point,
)


def boxes(*rows: list[float]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32).reshape(-1, 4)


def test_eleven_point_ap_hand_worked() -> None:
    # One image, 3 ground-truth boxes, 4 detections by score: TP, FP, TP, FP (the 3rd box missed).
    #   cumulative TP 1 1 2 2, FP 0 1 1 2 -> recall 1/3 1/3 2/3 2/3, precision 1 1/2 2/3 1/2
    #   t = 0, .1, .2, .3   -> best precision at recall >= t is 1    (4 thresholds)
    #   t = .4, .5, .6      -> rows with recall 2/3: max(2/3, 1/2) = 2/3  (3 thresholds)
    #   t = .7 .. 1.0       -> never reached: 0                       (4 thresholds)
    #   AP = (4 * 1 + 3 * 2/3) / 11 = 6/11
    truth = ImageBoxes(boxes([0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]), torch.zeros(3, dtype=torch.long))
    prediction = ImageBoxes(
        boxes([0, 0, 10, 10], [60, 60, 70, 70], [20, 20, 30, 31], [0, 40, 8, 48]),
        torch.zeros(4, dtype=torch.long), scores=torch.tensor([0.9, 0.8, 0.7, 0.6]),
    )
    recall, precision, positives = class_precision_recall([prediction], [truth], label=0)
    assert positives == 3
    np.testing.assert_allclose(recall, [1 / 3, 1 / 3, 2 / 3, 2 / 3])
    np.testing.assert_allclose(precision, [1, 1 / 2, 2 / 3, 1 / 2])
    assert eleven_point_ap(recall, precision) == pytest.approx(6 / 11)
    mean, per_class = voc_ap50_11_point([prediction], [truth], num_classes=1)
    assert mean == pytest.approx(6 / 11) and per_class == [pytest.approx(6 / 11)]


def test_recall_of_exactly_three_tenths_reaches_threshold_point_three() -> None:
    # 10 boxes, 3 perfect detections: recall .1 .2 .3 at precision 1 -> t = 0, .1, .2, .3 -> 4/11
    # (the VOC devkit's float arange would make t=.3 into .30000000000000004 and give 3/11).
    assert eleven_point_ap(np.array([0.1, 0.2, 3 / 10]), np.ones(3)) == pytest.approx(4 / 11)


def test_difficult_duplicates_and_classes_without_ground_truth() -> None:
    # Image A: class 0 boxes g1 and g2 (difficult). Image B: class 0 box g3, class 1 box g4.
    # Class 0 detections by score: on g1 (TP), on g1 again (duplicate: FP), on g2 (difficult:
    # ignored), on g3 (TP), nowhere (FP). npos = 2 (g2 is not counted).
    #   TP FP TP FP -> recall .5 .5 1 1, precision 1 .5 2/3 .5
    #   t = 0 .. .5 (6 thresholds) -> 1 ; t = .6 .. 1 (5 thresholds) -> 2/3 ; AP = (6 + 10/3) / 11
    # Class 1: one perfect detection -> 1. Class 2: a detection but no ground truth -> left out.
    image_a = ImageBoxes(boxes([0, 0, 10, 10], [30, 30, 40, 40]), torch.tensor([0, 0]),
                         difficult=torch.tensor([False, True]))
    image_b = ImageBoxes(boxes([0, 0, 20, 20], [40, 0, 60, 20]), torch.tensor([0, 1]))
    detections_a = ImageBoxes(boxes([0, 0, 10, 10], [1, 0, 10, 10], [30, 30, 40, 40]), torch.tensor([0, 0, 0]),
                              scores=torch.tensor([0.9, 0.8, 0.7]))
    detections_b = ImageBoxes(boxes([0, 0, 20, 19], [50, 50, 60, 60], [40, 0, 60, 20], [0, 30, 10, 40]),
                              torch.tensor([0, 0, 1, 2]), scores=torch.tensor([0.6, 0.5, 0.95, 0.99]))
    mean, per_class = voc_ap50_11_point([detections_a, detections_b], [image_a, image_b], num_classes=3)
    class_0 = (6 + 5 * 2 / 3) / 11
    assert per_class[0] == pytest.approx(class_0)
    assert per_class[1] == pytest.approx(1.0)
    assert math.isnan(per_class[2])
    assert mean == pytest.approx((class_0 + 1) / 2)


def test_iou_must_exceed_one_half() -> None:
    # Box [0,0,10,10] vs detection [0,0,10,5]: IoU exactly 0.5 -> not a match under VOC's ">" rule.
    truth = ImageBoxes(boxes([0, 0, 10, 10]), torch.tensor([0]))
    half = ImageBoxes(boxes([0, 0, 10, 5]), torch.tensor([0]), scores=torch.tensor([0.9]))
    assert voc_ap50_11_point([half], [truth], 1)[0] == 0.0


def random_case(seed: int, images: int = 40, classes: int = 3) -> tuple[list[ImageBoxes], list[ImageBoxes]]:
    """Well-separated ground truth on a grid; noisy detections, misses and false alarms."""
    generator = torch.Generator().manual_seed(seed)
    predictions, targets = [], []
    for _ in range(images):
        cells = torch.randperm(16, generator=generator)[:5]
        corners = torch.stack([cells % 4 * 50.0, cells // 4 * 50.0], 1) + 5
        truth = torch.cat([corners, corners + 30], 1)
        labels = torch.randint(0, classes, (5,), generator=generator)
        kept = torch.rand(5, generator=generator) < 0.8
        noisy = truth[kept] + torch.randn(int(kept.sum()), 4, generator=generator) * 4
        false_alarms = torch.rand(3, 2, generator=generator) * 170
        detected = torch.cat([noisy, torch.cat([false_alarms, false_alarms + 25], 1)])
        detected_labels = torch.cat([labels[kept], torch.randint(0, classes, (3,), generator=generator)])
        # real objects tend to score higher than false alarms, as with a trained detector
        scores = torch.rand(len(detected), generator=generator) * 0.7
        scores[: int(kept.sum())] += 0.3
        predictions.append(ImageBoxes(detected, detected_labels, scores=scores))
        targets.append(ImageBoxes(truth, labels))
    return predictions, targets


def test_agrees_with_pycocotools_and_torchmetrics_where_interpolations_coincide() -> None:
    predictions, targets = random_case(seed=1)
    mean, _ = voc_ap50_11_point(predictions, targets, num_classes=3)
    # Precondition: on this case the 11-point and the continuous AP are close, so AP50 computed
    # by pycocotools (101-point interpolation, greedy matching) must agree with ours.
    continuous = np.mean([
        all_point_ap(*class_precision_recall(predictions, targets, label)[:2]) for label in range(3)
    ])
    assert abs(mean - continuous) < 0.01, (mean, continuous)
    coco = coco_summary(predictions, targets, num_classes=3)
    assert coco["ap50"] == pytest.approx(mean, abs=0.01)
    assert coco["ap50"] == pytest.approx(continuous, abs=0.005)  # 101 points vs. the exact area

    # torchmetrics builds its default thresholds in float32 (0.55 -> 0.550000011920929), which
    # moves a few matches; pycocotools' own float64 defaults make the comparison exact.
    reference = MeanAveragePrecision(
        box_format="xyxy", iou_type="bbox", backend="pycocotools",
        iou_thresholds=np.linspace(0.5, 0.95, 10).tolist(), rec_thresholds=np.linspace(0.0, 1.0, 101).tolist(),
    )
    reference.update(
        [{"boxes": p.boxes, "scores": p.scores, "labels": p.labels} for p in predictions],
        [{"boxes": t.boxes, "labels": t.labels} for t in targets],
    )
    expected = reference.compute()
    # our in-memory COCO objects must give pycocotools exactly what torchmetrics gives it
    assert coco["map"] == pytest.approx(float(expected["map"]), abs=1e-6)
    assert coco["ap50"] == pytest.approx(float(expected["map_50"]), abs=1e-6)
    assert coco["ap75"] == pytest.approx(float(expected["map_75"]), abs=1e-6)


def test_metric_accumulates_present_images_only() -> None:
    predictions, targets = random_case(seed=2, images=6)
    metric = DetectionMetric(num_classes=3)
    absent = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}
    for start in (0, 3):  # two batches of three images, each with an absent image in the middle
        chunk = range(start, start + 3)
        output = {"detections": [
            {"boxes": predictions[i].boxes, "scores": predictions[i].scores, "labels": predictions[i].labels}
            for i in chunk
        ] + [{"boxes": boxes([0, 0, 50, 50]), "scores": torch.ones(1), "labels": torch.zeros(1, dtype=torch.long)}]}
        value = [{"boxes": targets[i].boxes, "labels": targets[i].labels} for i in chunk] + [absent]
        metric.update(output, TaskBatch(torch.tensor([True, True, True, False]), value))
    result = metric.compute()
    expected, _ = voc_ap50_11_point(predictions, targets, num_classes=3)
    assert result["ap50_voc"] == pytest.approx(expected)
    assert result["map"] == pytest.approx(coco_summary(predictions, targets, 3)["map"])
    metric.reset()
    assert metric.predictions == [] and metric.targets == []


def test_no_detections_gives_zero_and_no_ground_truth_gives_nan() -> None:
    truth = ImageBoxes(boxes([0, 0, 10, 10]), torch.tensor([0]))
    nothing = ImageBoxes(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), scores=torch.zeros(0))
    assert voc_ap50_11_point([nothing], [truth], 1)[0] == 0.0
    assert coco_summary([nothing], [truth], 1)["ap50"] == 0.0
    empty_truth = ImageBoxes(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long))
    assert math.isnan(voc_ap50_11_point([nothing], [empty_truth], 1)[0])
    assert math.isnan(coco_summary([nothing], [empty_truth], 1)["map"])
