"""VOC 2007 11-point AP50 against an independent numpy port of the VOC devkit's ``voc_eval``
(Everingham et al., IJCV 2010, sec. 4.2; the Python port shipped with py-faster-rcnn) on random
detections and targets with difficult flags, duplicates and overlapping boxes.

The port differs from the devkit in two documented places only, both shared with the code under
test: areas are continuous (no ``+ 1`` pixel), as for every box in this framework, and the recall
thresholds are exact tenths ``k / 10`` (the devkit's ``np.arange(0, 1.1, 0.1)`` turns 0.3 into
0.30000000000000004, so a recall of exactly 3/10 would miss it). Scores are distinct, so the
devkit's unstable ``argsort`` and our stable sort visit detections in the same order.
"""

import numpy as np
import pytest
import torch

from must.tasks.detection_metrics import ImageBoxes, voc_ap50_11_point


def devkit_iou(box: np.ndarray, ground_truth: np.ndarray) -> np.ndarray:
    """IoU of one box with each ground-truth box, as in ``voc_eval`` (continuous areas)."""
    width = np.maximum(np.minimum(ground_truth[:, 2], box[2]) - np.maximum(ground_truth[:, 0], box[0]), 0.0)
    height = np.maximum(np.minimum(ground_truth[:, 3], box[3]) - np.maximum(ground_truth[:, 1], box[1]), 0.0)
    intersection = width * height
    union = ((box[2] - box[0]) * (box[3] - box[1])
             + (ground_truth[:, 2] - ground_truth[:, 0]) * (ground_truth[:, 3] - ground_truth[:, 1]) - intersection)
    return intersection / union


def devkit_class_ap(predictions: list[ImageBoxes], targets: list[ImageBoxes], label: int) -> float | None:
    """``voc_eval(..., use_07_metric=True)`` for one class; ``None`` without positives."""
    records = []
    for target in targets:
        chosen = (target.labels == label).numpy()
        difficult = target.difficult.numpy()[chosen] if target.difficult is not None else np.zeros(chosen.sum(), bool)
        records.append({"bbox": target.boxes.double().numpy()[chosen], "difficult": difficult,
                        "det": np.zeros(chosen.sum(), bool)})
    npos = sum(int((~record["difficult"]).sum()) for record in records)
    if npos == 0:
        return None
    image_ids, confidence, boxes = [], [], []
    for image, prediction in enumerate(predictions):
        chosen = (prediction.labels == label).numpy()
        image_ids += [image] * int(chosen.sum())
        confidence += prediction.scores.double().numpy()[chosen].tolist()
        boxes += list(prediction.boxes.double().numpy()[chosen])
    order = np.argsort(-np.array(confidence))
    tp, fp = np.zeros(len(order)), np.zeros(len(order))
    for d, index in enumerate(order):
        record = records[image_ids[index]]
        overlap_max, best = -np.inf, -1
        if record["bbox"].size > 0:
            overlaps = devkit_iou(boxes[index], record["bbox"])
            overlap_max, best = np.max(overlaps), int(np.argmax(overlaps))
        if overlap_max > 0.5:
            if not record["difficult"][best]:
                if not record["det"][best]:
                    tp[d] = 1.0
                    record["det"][best] = True
                else:
                    fp[d] = 1.0
        else:
            fp[d] = 1.0
    fp, tp = np.cumsum(fp), np.cumsum(tp)
    recall = tp / float(npos)
    precision = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    ap = 0.0
    for t in [k / 10 for k in range(11)]:  # exact tenths (module docstring)
        ap += (0.0 if np.sum(recall >= t) == 0 else np.max(precision[recall >= t])) / 11.0
    return ap


def random_voc_case(seed: int, images: int = 30, classes: int = 4) -> tuple[list[ImageBoxes], list[ImageBoxes]]:
    """Overlapping ground truth with ~25% difficult boxes; per box 0-3 noisy detections (so
    duplicates and near-0.5 IoUs occur), plus false alarms; distinct scores."""
    rng = np.random.default_rng(seed)
    predictions, targets = [], []
    total = images * 40
    score_pool = iter(rng.permutation(total) / total + 1e-3)
    for _ in range(images):
        count = int(rng.integers(0, 7))
        corner = rng.uniform(0, 200, (count, 2))
        truth = np.concatenate([corner, corner + rng.uniform(10, 80, (count, 2))], 1)
        labels = rng.integers(0, classes, count)
        difficult = rng.random(count) < 0.25
        detected, detected_labels = [], []
        for box, label in zip(truth, labels):
            for _ in range(int(rng.integers(0, 4))):
                detected.append(box + rng.normal(0, 0.15 * (box[2] - box[0]), 4))
                detected_labels.append(label if rng.random() < 0.85 else rng.integers(0, classes))
        for _ in range(int(rng.integers(0, 4))):
            corner = rng.uniform(0, 200, 2)
            detected.append(np.concatenate([corner, corner + rng.uniform(10, 80, 2)]))
            detected_labels.append(rng.integers(0, classes))
        detected_boxes = np.array(detected, dtype=np.float32).reshape(-1, 4)
        detected_boxes[:, 2:] = np.maximum(detected_boxes[:, 2:], detected_boxes[:, :2] + 1)
        scores = np.array([next(score_pool) for _ in detected], dtype=np.float32)
        predictions.append(ImageBoxes(torch.from_numpy(detected_boxes), torch.tensor(detected_labels, dtype=torch.long),
                                      scores=torch.from_numpy(scores)))
        targets.append(ImageBoxes(torch.from_numpy(truth.astype(np.float32)), torch.from_numpy(labels),
                                  difficult=torch.from_numpy(difficult)))
    return predictions, targets


@pytest.mark.parametrize("seed", range(6))
def test_eleven_point_ap50_equals_the_devkit_port(seed: int) -> None:
    predictions, targets = random_voc_case(seed)
    assert len({float(s) for p in predictions for s in p.scores}) == sum(len(p.scores) for p in predictions)
    assert any(bool(t.difficult.any()) for t in targets)
    mean, per_class = voc_ap50_11_point(predictions, targets, num_classes=4)
    expected = [devkit_class_ap(predictions, targets, label) for label in range(4)]
    for ours, theirs in zip(per_class, expected):
        if theirs is None:
            assert np.isnan(ours)
        else:
            assert ours == pytest.approx(theirs, abs=1e-9)
    defined = [ap for ap in expected if ap is not None]
    assert mean == pytest.approx(float(np.mean(defined)), abs=1e-9)
    assert 0.05 < mean < 0.95  # neither trivial nor degenerate
