"""Object detection: a Faster R-CNN head on the FPN pyramid (MuST sec. 3.3, Mask R-CNN design).

MuST sec. 3.3: "we use the Mask R-CNN design on feature pyramids {P3..P7}: an RPN with 2 hidden
convolutions and a Fast R-CNN head with 4 hidden convolutions and 1 fully connected layer". The
pieces are torchvision's (``RegionProposalNetwork``, ``RPNHead(conv_depth=2)``,
``MultiScaleRoIAlign`` (faster on small maps: ``roi_align.py``), ``FastRCNNConvFCHead`` as in
``fasterrcnn_resnet50_fpn_v2``,
``FastRCNNPredictor``, ``RoIHeads``); this file only wires them to our features and targets.
The levels are configurable because the embedded world's 64-pixel images need P2..P5.

Box arithmetic runs in fp32 even under bf16 autocast: torchvision's box coder casts the anchors
(and proposals) to the regression output's dtype, and bf16's 8-bit mantissa puts coordinates in
[256, 512) on a 2-pixel grid, [512, 1024) on a 4-pixel grid. So the anchors are made in fp32 and
the RPN and Fast R-CNN heads hand fp32 outputs to decoding, NMS and post-processing; only their
convolutions and fully connected layers run in the autocast dtype.

Pseudo labels (MuST sec. 3.2): the teacher's boxes with score >= 0.5. Metric: AP50 with VOC
11-point interpolation (MuST supp., PASCAL detection), plus COCO mAP.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import Tensor, nn
from torchvision.models.detection.faster_rcnn import FastRCNNConvFCHead, FastRCNNPredictor
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.models.detection.rpn import AnchorGenerator, RegionProposalNetwork, RPNHead

from must.data.geometry import Geometry
from must.data.sample import TaskBatch
from must.errors import ConfigError
from must.models.features import Features, FeatureSpec
from must.tasks.base import Task
from must.tasks.detection_metrics import DetectionMetric
from must.tasks.roi_align import PyramidRoIAlign

LOSS_NAMES = {  # torchvision's loss keys -> ours
    "loss_objectness": "rpn_objectness",
    "loss_rpn_box_reg": "rpn_box_regression",
    "loss_classifier": "classification",
    "loss_box_reg": "box_regression",
}
PER_BOX_KEYS = ("labels", "scores", "difficult")
"""Target entries with one row per box: kept or dropped together with the boxes."""


class Float32AnchorGenerator(AnchorGenerator):
    """torchvision's ``AnchorGenerator``, anchors always in fp32 (it takes their dtype from the
    feature maps, bf16 under autocast); zero-stride fp32 stand-ins pass the shapes, no copy."""

    def forward(self, image_list: ImageList, feature_maps: list[Tensor]) -> list[Tensor]:
        stand_ins = [torch.zeros((), dtype=torch.float32, device=f.device).expand(f.shape) for f in feature_maps]
        return super().forward(image_list, stand_ins)


class Float32RPNHead(RPNHead):
    """torchvision's ``RPNHead`` returning fp32 objectness and box deltas, so that proposals are
    decoded and filtered in fp32 under autocast (module docstring)."""

    def forward(self, x: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        logits, deltas = super().forward(x)
        return [logit.float() for logit in logits], [delta.float() for delta in deltas]


class Float32FastRCNNPredictor(FastRCNNPredictor):
    """torchvision's ``FastRCNNPredictor`` returning fp32 class scores and box deltas, so that
    detections are decoded, scored and NMS-ed in fp32 under autocast (module docstring)."""

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        scores, deltas = super().forward(x)
        return scores.float(), deltas.float()


class DetectionHead(nn.Module):
    """RPN + RoI heads on the chosen pyramid levels; ``forward(features, target)``.

    Training: ``{"losses": {...}}`` of the images whose ``target.present`` is set (the others are
    skipped, MuST sec. 3.4); zero losses when no image has a target. Evaluation: ``{"detections": [{boxes, scores, labels}, ...]}``, with
    labels in ``0..K-1`` (torchvision's class 0 is the background, so labels shift by one).
    """

    def __init__(self, levels: Sequence[str], rpn: RegionProposalNetwork, roi_heads: RoIHeads) -> None:
        super().__init__()
        self.levels = tuple(levels)
        self.rpn = rpn
        self.roi_heads = roi_heads

    def forward(self, features: Features, target: TaskBatch | None = None) -> dict[str, Any]:
        if not self.training:
            return {"detections": self._detect(features)}
        if target is None or target.count == 0:
            return {"losses": self._zero_losses()}
        present = target.present.to(features.device).nonzero().flatten()
        if len(present) < features.batch_size:
            features = features.select(present)
        torchvision_targets = [  # torchvision's class 0 is the background: our labels shift by one
            {"boxes": target.value[i]["boxes"].to(features.device, torch.float32).reshape(-1, 4),
             "labels": target.value[i]["labels"].to(features.device, torch.int64) + 1}
            for i in present.tolist()
        ]
        images, pyramid = self._inputs(features)
        proposals, rpn_losses = self.rpn(images, pyramid, torchvision_targets)
        _, roi_losses = self.roi_heads(pyramid, proposals, images.image_sizes, torchvision_targets)
        losses = {LOSS_NAMES[k]: v for k, v in {**rpn_losses, **roi_losses}.items()}
        return {"losses": losses}

    def _detect(self, features: Features) -> list[dict[str, Tensor]]:
        images, pyramid = self._inputs(features)
        proposals, _ = self.rpn(images, pyramid)
        detections, _ = self.roi_heads(pyramid, proposals, images.image_sizes)
        return [{"boxes": d["boxes"], "scores": d["scores"], "labels": d["labels"] - 1} for d in detections]

    def _inputs(self, features: Features) -> tuple[ImageList, OrderedDict[str, Tensor]]:
        """torchvision reads the image size from ``ImageList.tensors.shape[-2:]`` only: a
        zero-stride expanded scalar stands in for the images, so nothing is allocated."""
        pyramid = OrderedDict((level, features.pyramid[level]) for level in self.levels)
        first = next(iter(pyramid.values()))
        height, width = features.image_size
        stand_in = first.new_zeros(()).expand(features.batch_size, 3, height, width)
        return ImageList(stand_in, [(height, width)] * features.batch_size), pyramid

    def _zero_losses(self) -> dict[str, Tensor]:
        """Zero losses still connected to every parameter, so DDP sees a gradient for each and
        the engine can call ``backward`` on a batch without any detection target."""
        zero = 0.0 * sum(p.sum() for p in self.parameters() if p.requires_grad)
        return {name: zero.clone() for name in LOSS_NAMES.values()}


class DetectionTask(Task):
    """Object detection, boxes in xyxy pixels, classes ``0..K-1`` (MuST sec. 3.2-3.3)."""

    name = "detection"
    primary_metric = "ap50_voc"

    def __init__(
        self,
        num_classes: int,
        class_names: Sequence[str] | None = None,
        *,
        levels: tuple[str, ...] = ("p2", "p3", "p4", "p5"),
        anchor_sizes: tuple[float, ...] | None = None,
        aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0),
        rpn_pre_nms_top_n: int = 300,
        rpn_post_nms_top_n: int = 100,
        rpn_batch_size_per_image: int = 64,
        box_batch_size_per_image: int = 128,
        box_score_threshold: float = 0.05,
        box_nms_threshold: float = 0.5,
        detections_per_image: int = 50,
        representation_size: int = 1024,
        min_box_size: float = 1.0,
        pseudo_label_threshold: float = 0.5,
        draw_threshold: float = 0.3,
    ) -> None:
        """``anchor_sizes``: one size per level, default ``4 * stride`` (16 px on P2). The RPN
        top-n are per level before NMS and per image after, in training and evaluation alike.
        ``representation_size`` is the width of the Fast R-CNN head's fully connected layer."""
        if num_classes < 1:
            raise ConfigError(f"num_classes must be positive, got {num_classes}")
        if class_names is not None and len(class_names) != num_classes:
            raise ConfigError(f"{len(class_names)} class names for {num_classes} classes")
        if anchor_sizes is not None and len(anchor_sizes) != len(levels):
            raise ConfigError(f"{len(anchor_sizes)} anchor sizes for {len(levels)} levels {levels}")
        self.num_classes = num_classes
        self.class_names = list(class_names) if class_names is not None else None
        self.levels = tuple(levels)
        self.anchor_sizes = anchor_sizes
        self.aspect_ratios = tuple(aspect_ratios)
        self.rpn_pre_nms_top_n = rpn_pre_nms_top_n
        self.rpn_post_nms_top_n = rpn_post_nms_top_n
        self.rpn_batch_size_per_image = rpn_batch_size_per_image
        self.box_batch_size_per_image = box_batch_size_per_image
        self.box_score_threshold = box_score_threshold
        self.box_nms_threshold = box_nms_threshold
        self.detections_per_image = detections_per_image
        self.representation_size = representation_size
        self.min_box_size = min_box_size
        self.pseudo_label_threshold = pseudo_label_threshold
        self.draw_threshold = draw_threshold

    def build_head(self, spec: FeatureSpec) -> DetectionHead:
        """RPN with 2 hidden convs; Fast R-CNN head with 4 hidden convs + 1 fc (MuST sec. 3.3)."""
        unknown = [level for level in self.levels if level not in spec.levels]
        if unknown:
            raise ConfigError(f"detection option levels: {unknown} not in the model's pyramid; it has "
                              f"{list(spec.levels)}")
        sizes = self.anchor_sizes or tuple(4.0 * spec.strides[level] for level in self.levels)
        anchors = Float32AnchorGenerator(tuple((size,) for size in sizes), (self.aspect_ratios,) * len(sizes))
        channels = spec.fpn_channels
        rpn = RegionProposalNetwork(
            anchors, Float32RPNHead(channels, anchors.num_anchors_per_location()[0], conv_depth=2),
            fg_iou_thresh=0.7, bg_iou_thresh=0.3,
            batch_size_per_image=self.rpn_batch_size_per_image, positive_fraction=0.5,
            pre_nms_top_n={"training": self.rpn_pre_nms_top_n, "testing": self.rpn_pre_nms_top_n},
            post_nms_top_n={"training": self.rpn_post_nms_top_n, "testing": self.rpn_post_nms_top_n},
            nms_thresh=0.7,
        )
        pool = PyramidRoIAlign(list(self.levels), output_size=7, sampling_ratio=2)
        # normalized hidden convs as in torchvision's fasterrcnn_resnet50_fpn_v2 (and the paper's
        # TPU Mask R-CNN heads); the RoI batch (hundreds of boxes) keeps the statistics stable
        box_head = FastRCNNConvFCHead((channels, 7, 7), [channels] * 4, [self.representation_size],
                                      norm_layer=nn.BatchNorm2d)
        roi_heads = RoIHeads(
            pool, box_head, Float32FastRCNNPredictor(self.representation_size, self.num_classes + 1),
            fg_iou_thresh=0.5, bg_iou_thresh=0.5,
            batch_size_per_image=self.box_batch_size_per_image, positive_fraction=0.25,
            bbox_reg_weights=None, score_thresh=self.box_score_threshold,
            nms_thresh=self.box_nms_threshold, detections_per_img=self.detections_per_image,
        )
        return DetectionHead(self.levels, rpn, roi_heads)

    def loss(self, output: dict[str, Any], target: TaskBatch) -> dict[str, Tensor]:
        """Sum of the RPN and Fast R-CNN losses, equally weighted as in Faster R-CNN."""
        parts = output["losses"]
        return {"loss": torch.stack(list(parts.values())).sum(), **parts}

    def predict(self, output: dict[str, Any]) -> list[dict[str, Tensor]]:
        if "detections" not in output:
            raise ValueError("detection predictions come from the head in eval mode; got training output")
        return [{key: value.detach() for key, value in d.items()} for d in output["detections"]]

    def to_pseudo_label(self, prediction: dict[str, Tensor],
                        threshold: float | None = None) -> dict[str, Tensor]:
        """MuST sec. 3.2: keep the boxes whose score is at least the threshold (default 0.5)."""
        threshold = self.pseudo_label_threshold if threshold is None else threshold
        keep = prediction["scores"] >= threshold
        return {
            "boxes": prediction["boxes"][keep].detach().to("cpu", torch.float32),
            "labels": prediction["labels"][keep].detach().to("cpu", torch.int64),
            "scores": prediction["scores"][keep].detach().to("cpu", torch.float32),
        }

    def metric(self) -> DetectionMetric:
        return DetectionMetric(self.num_classes)

    def draw(self, image: np.ndarray, prediction: dict[str, Tensor]) -> np.ndarray:
        """Boxes with class name and score (paper Figure 4); boxes below ``draw_threshold`` are
        left out. A target (no scores) is drawn whole."""
        canvas = Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8))
        pen = ImageDraw.Draw(canvas)
        scores = prediction.get("scores")
        boxes, labels = prediction["boxes"].tolist(), prediction["labels"].tolist()
        for index, (box, label) in enumerate(zip(boxes, labels)):
            score = None if scores is None else float(scores[index])
            if score is not None and score < self.draw_threshold:
                continue
            color = _color(int(label))
            # xyxy edges are exclusive: the box's last pixel row / column is x2 - 1, y2 - 1
            pen.rectangle((box[0], box[1], max(box[0], box[2] - 1), max(box[1], box[3] - 1)), outline=color)
            text = self._class_name(int(label)) + ("" if score is None else f" {score:.2f}")
            pen.text((box[0] + 1, box[1] + 1), text, fill=color)
        return np.asarray(canvas)

    def transform_target(self, target: dict[str, Tensor] | None,
                         geometry: Geometry) -> dict[str, Tensor] | None:
        """Boxes follow the joint scale jitter / crop / flip; boxes left smaller than
        ``min_box_size`` are dropped together with their labels (and scores, difficult flags)."""
        if target is None:
            return None
        boxes, keep = geometry.warp_boxes(target["boxes"], min_size=self.min_box_size)
        result = {key: value[keep] for key, value in target.items() if key in PER_BOX_KEYS}
        result["boxes"] = boxes[keep]
        return result

    def collate(self, targets: list[dict[str, Tensor] | None]) -> TaskBatch:
        """A list with one dict per image; absent images get an empty box set and ``present``
        False."""
        present = torch.tensor([t is not None for t in targets], dtype=torch.bool)
        values = [_checked(t) if t is not None else _empty() for t in targets]
        return TaskBatch(present, values)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "num_classes": self.num_classes, "class_names": self.class_names}

    def _class_name(self, label: int) -> str:
        return self.class_names[label] if self.class_names is not None else str(label)


def _empty() -> dict[str, Tensor]:
    return {"boxes": torch.zeros(0, 4, dtype=torch.float32), "labels": torch.zeros(0, dtype=torch.int64)}


def _checked(target: dict[str, Tensor]) -> dict[str, Tensor]:
    """Normalizes dtypes and refuses malformed targets with a message that says what is wrong."""
    boxes = torch.as_tensor(target["boxes"], dtype=torch.float32)
    labels = torch.as_tensor(target["labels"], dtype=torch.int64).reshape(-1)
    if boxes.numel() == 0:
        boxes = boxes.reshape(0, 4)
    if boxes.dim() != 2 or boxes.shape[1] != 4:
        raise ValueError(f"detection boxes must be [N, 4] xyxy, got shape {list(boxes.shape)}")
    if len(boxes) != len(labels):
        raise ValueError(f"detection target has {len(boxes)} boxes but {len(labels)} labels")
    result = dict(target)
    result.update(boxes=boxes, labels=labels)
    return result


def _color(label: int) -> tuple[int, int, int]:
    """A distinct, stable color per class (golden-ratio hue steps)."""
    hue = (label * 0.618033988749895) % 1.0
    rgb = Image.new("HSV", (1, 1), (int(hue * 255), 200, 255)).convert("RGB").getpixel((0, 0))
    return int(rgb[0]), int(rgb[1]), int(rgb[2])
