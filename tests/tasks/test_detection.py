
import numpy as np
import pytest
import torch

from must.data.geometry import Geometry
from must.models.features import Features, FeatureSpec
from must.tasks import build_task
from must.tasks.detection import DetectionHead, DetectionTask
from must.tasks.detection_metrics import DetectionMetric

SIZE = 64
CHANNELS = 32
SPEC = FeatureSpec(c5_channels=64, fpn_channels=CHANNELS)


def fake_features(batch: int, seed: int = 0) -> Features:
    """Random P2..P7 with the shapes a ResNet-FPN gives for a 64x64 image (strides 4..128)."""
    return Features.random(SPEC, batch, (SIZE, SIZE), torch.Generator().manual_seed(seed))


def small_task(**options: object) -> DetectionTask:
    defaults = dict(representation_size=64, rpn_pre_nms_top_n=100, rpn_post_nms_top_n=30,
                    rpn_batch_size_per_image=64, box_batch_size_per_image=64)
    return DetectionTask(3, ["cube", "ball", "cone"], **{**defaults, **options})


TARGETS = [
    {"boxes": torch.tensor([[4.0, 6.0, 28.0, 30.0], [34.0, 20.0, 60.0, 44.0]]), "labels": torch.tensor([0, 1])},
    {"boxes": torch.tensor([[10.0, 36.0, 30.0, 60.0], [36.0, 4.0, 58.0, 26.0]]), "labels": torch.tensor([2, 0])},
    {"boxes": torch.tensor([[20.0, 20.0, 44.0, 40.0]]), "labels": torch.tensor([1])},
]


def test_train_forward_gives_four_losses_and_eval_gives_detections() -> None:
    task = small_task()
    head = task.build_head(SPEC)
    batch = task.collate(TARGETS)
    losses = {k: v.detach() for k, v in task.loss(head.train()(fake_features(3), batch), batch).items()}
    assert set(losses) == {"loss", "rpn_objectness", "rpn_box_regression", "classification", "box_regression"}
    assert all(v.dim() == 0 and torch.isfinite(v) for v in losses.values())
    assert losses["loss"].item() == pytest.approx(sum(float(v) for k, v in losses.items() if k != "loss"))

    with torch.no_grad():
        output = head.eval()(fake_features(3))
    predictions = task.predict(output)
    assert len(predictions) == 3
    for prediction in predictions:
        count = len(prediction["boxes"])
        assert 0 < count <= task.detections_per_image
        assert prediction["boxes"].shape == (count, 4) and prediction["scores"].shape == (count,)
        assert prediction["labels"].dtype == torch.int64
        assert 0 <= int(prediction["labels"].min()) and int(prediction["labels"].max()) < task.num_classes
        assert 0 <= float(prediction["boxes"].min()) and float(prediction["boxes"].max()) <= SIZE


def test_backward_reaches_every_trainable_parameter() -> None:
    task = small_task()
    head = task.build_head(SPEC).train()
    batch = task.collate(TARGETS)
    losses = task.loss(head(fake_features(3), batch), batch)
    assert all(v.item() > 0 for v in losses.values()), losses  # RPN and RoI parts all active
    losses["loss"].backward()
    missing = [name for name, p in head.named_parameters()
               if p.requires_grad and (p.grad is None or float(p.grad.abs().sum()) == 0)]
    assert missing == []


def test_mixed_batch_trains_on_present_images_only() -> None:
    task = small_task()
    head = task.build_head(SPEC).train()
    features = fake_features(4)
    mixed = task.collate([TARGETS[0], None, TARGETS[1], None])
    torch.manual_seed(5)  # proposal / anchor sampling draws random numbers: same draws both times
    from_mixed = task.loss(head(features, mixed), mixed)
    present_only = task.collate([TARGETS[0], TARGETS[1]])
    torch.manual_seed(5)
    from_subset = task.loss(head(features.select(torch.tensor([0, 2])), present_only), present_only)
    for name in from_mixed:
        assert from_mixed[name].item() == pytest.approx(from_subset[name].item(), rel=1e-5), name


def test_present_image_without_boxes_is_a_background_image() -> None:
    # A pseudo label with no box above the threshold says "no object here": still trained on.
    task = small_task()
    head = task.build_head(SPEC).train()
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}
    batch = task.collate([empty, None])
    losses = task.loss(head(fake_features(2), batch), batch)
    assert losses["rpn_objectness"].item() > 0 and losses["classification"].item() > 0
    assert losses["rpn_box_regression"].item() == 0 and losses["box_regression"].item() == 0


def test_no_present_image_gives_zero_loss_still_connected_to_the_head() -> None:
    task = small_task()
    head = task.build_head(SPEC).train()
    batch = task.collate([None, None])
    losses = task.loss(head(fake_features(2), batch), batch)
    assert losses["loss"].item() == 0.0
    losses["loss"].backward()
    assert all(p.grad is not None and float(p.grad.abs().sum()) == 0 for p in head.parameters())
    assert task.loss(head(fake_features(2), None), batch)["loss"].item() == 0.0


def test_pseudo_label_keeps_scores_at_or_above_threshold() -> None:
    task = small_task()
    prediction = {
        "boxes": torch.tensor([[0.0, 0, 10, 10], [5, 5, 20, 20], [1, 1, 9, 9]]),
        "scores": torch.tensor([0.9, 0.5, 0.49]),
        "labels": torch.tensor([2, 0, 1]),
    }
    label = task.to_pseudo_label(prediction)
    assert label["labels"].tolist() == [2, 0] and label["scores"].tolist() == pytest.approx([0.9, 0.5])
    assert torch.equal(label["boxes"], prediction["boxes"][:2])
    assert label["boxes"].dtype == torch.float32 and label["labels"].dtype == torch.int64
    assert task.to_pseudo_label(prediction, threshold=0.95)["boxes"].shape == (0, 4)


def test_transform_target_flips_scales_and_drops_small_boxes_with_their_labels() -> None:
    task = small_task(min_box_size=2.0)
    target = {"boxes": torch.tensor([[0.0, 0.0, 10.0, 20.0], [30.0, 30.0, 31.0, 40.0], [20.0, 4.0, 40.0, 8.0]]),
              "labels": torch.tensor([0, 1, 2]), "scores": torch.tensor([0.9, 0.8, 0.7])}
    # scale x2 (40x40 -> 80x80), window 64x64 at offset (0, 0), flipped left-right:
    #   box 0 -> [0,0,20,40] -> flipped x: [64-20, 64-0] = [44, 64]
    #   box 1 -> [60,60,62,80] -> clipped to [60,60,62,64]: 4 px high, 2 px wide -> kept
    #   box 2 -> [40,8,80,16] -> clipped [40,8,64,16] -> flipped [0, 24]
    geometry = Geometry((40, 40), (80, 80), (0, 0), (64, 64), flip=True)
    out = task.transform_target(target, geometry)
    assert out["labels"].tolist() == [0, 1, 2]
    assert out["boxes"].tolist() == [[44, 0, 64, 40], [2, 60, 4, 64], [0, 8, 24, 16]]
    # window from x = 61: box 0 ends at x = 20 (gone), box 1 keeps 1 px (< 2: dropped), box 2
    # [40, 80] -> [-21, 19] -> clipped [0, 19]; labels and scores follow the boxes
    shifted = Geometry((40, 40), (80, 80), (0, 61), (64, 64), flip=False)
    out = task.transform_target(target, shifted)
    assert out["boxes"].tolist() == [[0, 8, 19, 16]]
    assert out["labels"].tolist() == [2] and out["scores"].tolist() == pytest.approx([0.7])
    assert task.transform_target(None, geometry) is None


def test_collate_marks_absent_images_and_checks_shapes() -> None:
    task = small_task()
    batch = task.collate([TARGETS[0], None])
    assert batch.present.tolist() == [True, False]
    assert batch.value[1]["boxes"].shape == (0, 4) and batch.value[1]["labels"].dtype == torch.int64
    with pytest.raises(ValueError, match="2 boxes but 1 labels"):
        task.collate([{"boxes": torch.zeros(2, 4), "labels": torch.zeros(1)}])
    with pytest.raises(ValueError, match=r"\[N, 4\]"):
        task.collate([{"boxes": torch.zeros(2, 5), "labels": torch.zeros(2)}])


def test_draw_puts_boxes_above_the_draw_threshold_only() -> None:
    task = small_task(draw_threshold=0.5)
    image = np.zeros((SIZE, SIZE, 3), dtype=np.uint8)
    prediction = {"boxes": torch.tensor([[10.0, 10.0, 40.0, 40.0], [45.0, 45.0, 60.0, 60.0]]),
                  "scores": torch.tensor([0.9, 0.2]), "labels": torch.tensor([0, 1])}
    drawn = task.draw(image, prediction)
    assert drawn.shape == image.shape and drawn.dtype == np.uint8
    assert drawn[39, 25].any()  # bottom edge of the confident box
    assert not drawn[59, 52].any()  # the 0.2 box is not drawn
    assert not image.any()  # the input is left untouched
    unnamed = DetectionTask(3).draw(image, {"boxes": prediction["boxes"], "labels": prediction["labels"]})
    assert unnamed[59, 52].any()  # a target (no scores) is drawn whole


def test_build_head_checks_levels_and_derives_anchor_sizes() -> None:
    with pytest.raises(ValueError, match="p9"):
        small_task(levels=("p2", "p9")).build_head(SPEC)
    with pytest.raises(ValueError, match="anchor sizes"):
        small_task(anchor_sizes=(16.0,))
    head = small_task().build_head(SPEC)
    assert isinstance(head, DetectionHead)
    assert head.rpn.anchor_generator.sizes == ((16.0,), (32.0,), (64.0,), (128.0,))
    assert len(head.rpn.head.conv) == 2  # MuST sec. 3.3: RPN with 2 hidden convs
    convs = [m for m in head.roi_heads.box_head.modules() if isinstance(m, torch.nn.Conv2d)]
    linears = [m for m in head.roi_heads.box_head.modules() if isinstance(m, torch.nn.Linear)]
    assert len(convs) == 4 and len(linears) == 1  # 4 hidden convs + 1 fc


def test_describe_metric_and_registry() -> None:
    task = small_task()
    assert task.describe() == {"name": "detection", "num_classes": 3, "class_names": ["cube", "ball", "cone"]}
    built = build_task("detection", num_classes=2)
    assert isinstance(built, DetectionTask) and built.describe()["class_names"] is None
    with pytest.raises(ValueError, match="2 class names for 3 classes"):
        DetectionTask(3, ["a", "b"])
    assert isinstance(task.metric(), DetectionMetric) and task.metric().num_classes == 3
    assert task.primary_metric == "ap50_voc"


def test_overfits_two_images() -> None:
    """Fixed random features, 2 images x 2 boxes: the losses fall and the head then finds the
    training boxes (AP50 near 1)."""
    task = small_task(detections_per_image=20)
    head = task.build_head(SPEC)
    features = fake_features(2, seed=1)
    batch = task.collate(TARGETS[:2])
    optimizer = torch.optim.Adam(head.parameters(), lr=1e-3)
    history = []
    for _ in range(200):
        losses = task.loss(head.train()(features, batch), batch)
        optimizer.zero_grad()
        losses["loss"].backward()
        optimizer.step()
        history.append(losses["loss"].item())
    assert np.mean(history[-10:]) < 0.2 * np.mean(history[:10]), (history[:10], history[-10:])
    metric = task.metric()
    with torch.no_grad():
        metric.update(head.eval()(features), batch)
    result = metric.compute()
    assert result["ap50_voc"] > 0.9 and result["ap50"] > 0.9, result
