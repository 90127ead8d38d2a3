"""Detection metrics: PASCAL VOC AP50 with 11-point interpolation, and COCO mAP via pycocotools.

MuST (supp., "PASCAL Detection") reports "AP50 with 11 recall points to compute average
precision", the VOC 2007 protocol (Everingham et al., IJCV 2010, sec. 4.2):

    AP = 1/11 * sum_{t in {0, 0.1, ..., 1}} max_{recall >= t} precision

No field library computes the 11-point variant (pycocotools and torchmetrics interpolate at 101
points), so it is written here and tested against a hand-worked example and, where the variants
coincide, against pycocotools. The COCO numbers come from pycocotools itself; we only build its
``COCO`` objects in memory.

Neither metric is a sum over images, so under DDP :class:`DetectionMetric` gathers every rank's
images and each rank computes the metric of the whole evaluation set.
"""

from __future__ import annotations

import contextlib
import io
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torchvision.ops import box_iou

from must import distributed
from must.data.sample import TaskBatch


@dataclass
class ImageBoxes:
    """Boxes of one image on the CPU: ``boxes [N, 4]`` xyxy, ``labels [N]``, and ``scores [N]``
    (detections) or ``difficult [N]`` (ground truth; all False when the dataset has no flag)."""

    boxes: Tensor
    labels: Tensor
    scores: Tensor | None = None
    difficult: Tensor | None = None


def eleven_point_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """VOC 2007 11-point interpolated AP: mean over t = 0, 0.1, ..., 1 of the highest precision
    reached at recall >= t (0 when recall t is never reached).

    The thresholds are exact tenths (``k / 10``), so a recall of exactly 3/10 reaches t = 0.3; the
    VOC devkit's ``np.arange(0, 1.1, 0.1)`` makes that threshold 0.30000000000000004 and misses it.
    """
    total = 0.0
    for k in range(11):
        reached = precision[recall >= k / 10]
        total += float(reached.max()) if reached.size else 0.0
    return total / 11


def all_point_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """VOC 2010+ area under the monotone precision envelope (used in tests to pick cases where
    the 11-point and the continuous AP agree, so pycocotools can serve as a reference)."""
    recall_ext = np.concatenate([[0.0], recall, [1.0]])
    precision_ext = np.concatenate([[0.0], precision, [0.0]])
    envelope = np.maximum.accumulate(precision_ext[::-1])[::-1]
    steps = np.nonzero(recall_ext[1:] != recall_ext[:-1])[0]
    return float(np.sum((recall_ext[steps + 1] - recall_ext[steps]) * envelope[steps + 1]))


def class_precision_recall(predictions: list[ImageBoxes], targets: list[ImageBoxes], label: int,
                           iou_threshold: float = 0.5) -> tuple[np.ndarray, np.ndarray, int]:
    """VOC matching for one class: detections of all images in decreasing score order; each takes
    the ground-truth box it overlaps most; IoU > threshold and that box not yet taken -> true
    positive, already taken -> false positive (a duplicate), a "difficult" box -> ignored (neither).
    Returns (recall, precision, number of non-difficult ground-truth boxes)."""
    entries: list[tuple[float, int, int]] = []  # (score, image, detection index)
    ious: list[Tensor] = []
    ground_truth: list[tuple[Tensor, Tensor]] = []  # per image: difficult flags, taken flags
    positives = 0
    for image, (prediction, target) in enumerate(zip(predictions, targets)):
        gt_mask = target.labels == label
        gt_difficult = _difficult(target)[gt_mask]
        positives += int((~gt_difficult).sum())
        det_mask = prediction.labels == label
        det_boxes = prediction.boxes[det_mask]
        ious.append(box_iou(det_boxes.double(), target.boxes[gt_mask].double()))
        ground_truth.append((gt_difficult, torch.zeros(len(gt_difficult), dtype=torch.bool)))
        scores = prediction.scores[det_mask] if prediction.scores is not None else torch.ones(len(det_boxes))
        entries.extend((float(s), image, i) for i, s in enumerate(scores))
    entries.sort(key=lambda entry: -entry[0])  # stable: ties keep image order
    hits: list[bool] = []
    for _, image, index in entries:
        overlaps = ious[image][index]
        if overlaps.numel() == 0 or float(overlaps.max()) <= iou_threshold:
            hits.append(False)
            continue
        best = int(overlaps.argmax())
        difficult, taken = ground_truth[image]
        if bool(difficult[best]):
            continue
        hits.append(not bool(taken[best]))
        taken[best] = True
    true_positives = np.cumsum(np.array(hits, dtype=np.float64))
    false_positives = np.cumsum(~np.array(hits, dtype=bool))
    recall = true_positives / max(positives, 1)
    precision = true_positives / np.maximum(true_positives + false_positives, np.finfo(np.float64).eps)
    return recall, precision, positives


def voc_ap50_11_point(predictions: list[ImageBoxes], targets: list[ImageBoxes], num_classes: int,
                      iou_threshold: float = 0.5) -> tuple[float, list[float]]:
    """Mean over classes of the 11-point AP (MuST supp., PASCAL detection). Classes without any
    non-difficult ground-truth box are left out of the mean (their AP is NaN in the list)."""
    per_class = []
    for label in range(num_classes):
        recall, precision, positives = class_precision_recall(predictions, targets, label, iou_threshold)
        per_class.append(eleven_point_ap(recall, precision) if positives else math.nan)
    defined = [ap for ap in per_class if not math.isnan(ap)]
    return (float(np.mean(defined)) if defined else math.nan), per_class


def coco_summary(predictions: list[ImageBoxes], targets: list[ImageBoxes],
                 num_classes: int) -> dict[str, float]:
    """COCO AP@[.5:.95], AP50, AP75 from pycocotools on in-memory ``COCO`` objects. "difficult"
    boxes become ``iscrowd`` regions: matches to them are ignored, as in VOC (pycocotools offers
    no other ignore flag; its crowd IoU divides by the detection's area only)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if not any(len(t.boxes) for t in targets):
        return {"map": math.nan, "ap50": math.nan, "ap75": math.nan}
    if not any(len(p.boxes) for p in predictions):
        return {"map": 0.0, "ap50": 0.0, "ap75": 0.0}
    ground_truth = COCO()
    ground_truth.dataset = _coco_dataset(targets, num_classes)
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        ground_truth.createIndex()
        detections = ground_truth.loadRes(_coco_detections(predictions))
        evaluation = COCOeval(ground_truth, detections, iouType="bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    # stats is -1 where no ground truth exists for the setting; report NaN (undefined) instead
    stats = [float(s) if s >= 0 else math.nan for s in evaluation.stats[:3]]
    return {"map": stats[0], "ap50": stats[1], "ap75": stats[2]}


def _coco_dataset(targets: list[ImageBoxes], num_classes: int) -> dict[str, Any]:
    annotations = []
    for image, target in enumerate(targets):
        for box, label, difficult in zip(target.boxes.tolist(), target.labels.tolist(),
                                         _difficult(target).tolist()):
            width, height = box[2] - box[0], box[3] - box[1]
            annotations.append({
                "id": len(annotations) + 1,  # pycocotools treats id 0 as "unmatched"
                "image_id": image, "category_id": int(label), "bbox": [box[0], box[1], width, height],
                "area": width * height, "iscrowd": int(difficult),
            })
    return {
        "images": [{"id": image} for image in range(len(targets))],
        "categories": [{"id": label} for label in range(num_classes)],
        "annotations": annotations,
    }


def _coco_detections(predictions: list[ImageBoxes]) -> list[dict[str, Any]]:
    results = []
    for image, prediction in enumerate(predictions):
        scores = prediction.scores if prediction.scores is not None else torch.ones(len(prediction.boxes))
        for box, label, score in zip(prediction.boxes.tolist(), prediction.labels.tolist(), scores.tolist()):
            results.append({"image_id": image, "category_id": int(label), "score": float(score),
                            "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]]})
    return results


def _difficult(target: ImageBoxes) -> Tensor:
    if target.difficult is None:
        return torch.zeros(len(target.labels), dtype=torch.bool)
    return target.difficult.bool()


class DetectionMetric:
    """Accumulates detections and targets of the images that have a target; ``compute`` returns
    ``ap50_voc`` (the paper's PASCAL metric, in [0, 1]) and COCO ``map``, ``ap50``, ``ap75``.

    ``update`` takes the head's eval output (``{"detections": [...]}``) or a list of per-image
    prediction dicts, and the task's :class:`TaskBatch`. Images without a target are skipped.
    Under DDP ``compute`` is a collective (every rank must call it): it gathers all ranks' images
    and returns the metric of the whole set on every rank.
    """

    def __init__(self, num_classes: int, iou_threshold: float = 0.5) -> None:
        self.num_classes = num_classes
        self.iou_threshold = iou_threshold
        self.predictions: list[ImageBoxes] = []
        self.targets: list[ImageBoxes] = []
        self.positions: list[int] = []
        """Each kept image's place among the images this rank passed to ``update``."""
        self.seen = 0

    def update(self, output: Any, target: TaskBatch) -> None:
        detections = output["detections"] if isinstance(output, dict) else output
        if len(detections) != len(target.value):
            raise ValueError(f"{len(detections)} predictions for {len(target.value)} targets")
        for offset, (prediction, truth, present) in enumerate(
                zip(detections, target.value, target.present.tolist())):
            if not present:
                continue
            self.positions.append(self.seen + offset)
            self.predictions.append(ImageBoxes(
                _cpu(prediction["boxes"]).float().reshape(-1, 4), _cpu(prediction["labels"]).long(),
                scores=_cpu(prediction["scores"]).float() if "scores" in prediction else None,
            ))
            self.targets.append(ImageBoxes(
                _cpu(truth["boxes"]).float().reshape(-1, 4), _cpu(truth["labels"]).long(),
                difficult=_cpu(truth["difficult"]).bool() if "difficult" in truth else None,
            ))
        self.seen += len(target.value)

    def compute(self) -> dict[str, float]:
        predictions, targets = self._from_every_rank()
        voc, _ = voc_ap50_11_point(predictions, targets, self.num_classes, self.iou_threshold)
        return {"ap50_voc": voc, **coco_summary(predictions, targets, self.num_classes)}

    def reset(self) -> None:
        self.predictions.clear()
        self.targets.clear()
        self.positions.clear()
        self.seen = 0

    def _from_every_rank(self) -> tuple[list[ImageBoxes], list[ImageBoxes]]:
        """All ranks' images in the evaluation set's order. The evaluation loader deals images
        round-robin (rank ``r`` of ``W`` takes images ``r, r + W, ...``: ``ShardedBatchSampler``
        in ``must.data.loader``), so image ``i`` of rank ``r`` is image ``i * W + r``. Restoring
        that order keeps ties between equal scores in different images resolved as in one
        process (both metrics rank detections by score, then by image). A batch in which no
        image has a target never reaches ``update``; after one, only such ties may order
        differently."""
        if not distributed.is_initialized():
            return self.predictions, self.targets
        shards = distributed.all_gather_objects((self.positions, self.predictions, self.targets))
        world = len(shards)
        images = sorted(
            ((position * world + rank, prediction, target)
             for rank, (positions, predictions, targets) in enumerate(shards)  # type: ignore[misc]
             for position, prediction, target in zip(positions, predictions, targets)),
            key=lambda image: image[0],
        )
        return [prediction for _, prediction, _ in images], [target for _, _, target in images]


def _cpu(tensor: Tensor) -> Tensor:
    return tensor.detach().to("cpu")
