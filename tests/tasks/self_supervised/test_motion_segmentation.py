"""Motion segmentation (Doersch & Zisserman 2017 sec. 2): views cut the same square of frame and
mask, come from the sample's mask (none without one), the loss is per-pixel binary cross-entropy
(against a naive reference), gradients reach trunk and head, and a tiny model learns the world's
motion masks beyond the all-background baseline in a few dozen steps."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from must.data.loader import train_transform
from must.data.readers import DatasetConfig, open_dataset
from must.data.sample import Sample
from must.errors import ConfigError
from must.tasks.self_supervised import SELF_SUPERVISED_TASKS, MotionSegmentationTask
from must.world import generate_clips


def _frame_and_mask(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A 48x64 frame whose bright pixels are exactly the mask's moving pixels."""
    mask = torch.zeros(48, 64, dtype=torch.uint8)
    mask[10:30, 5:25] = 1
    mask[35:45, 40:60] = 1
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randint(0, 60, (3, 48, 64), generator=generator, dtype=torch.uint8)
    return noise + 190 * mask, mask


def test_registered_under_its_name() -> None:
    assert SELF_SUPERVISED_TASKS["motion_segmentation"]().name == "motion_segmentation"


def test_views_crop_frame_and_mask_together() -> None:
    task = MotionSegmentationTask(view_size=32)
    frame, mask = _frame_and_mask()
    for seed in range(8):
        views = task.make_views(frame, torch.Generator().manual_seed(seed), mask=mask)
        again = task.make_views(frame, torch.Generator().manual_seed(seed), mask=mask)
        assert views["frame"].shape == (3, 32, 32) and views["mask"].shape == (32, 32)
        assert torch.equal(views["frame"], again["frame"]) and torch.equal(views["mask"], again["mask"])
        assert set(views["mask"].unique().tolist()) <= {0, 1}
        bright = views["frame"].float().mean(0) > 150
        # the same square of both (antialiasing blurs only the borders of the bright blocks)
        assert (bright == views["mask"].bool()).float().mean() > 0.9, seed


def test_views_come_from_the_samples_mask() -> None:
    task = MotionSegmentationTask(view_size=32)
    frame, mask = _frame_and_mask()
    generator = torch.Generator().manual_seed(0)
    assert task.sample_views(Sample("still", frame), generator) is None
    views = task.sample_views(Sample("frame", frame, {"motion_segmentation": mask}),
                              torch.Generator().manual_seed(1))
    expected = task.make_views(frame, torch.Generator().manual_seed(1), mask=mask)
    assert torch.equal(views["mask"], expected["mask"])
    with pytest.raises(ValueError, match="motion mask"):
        task.make_views(frame, generator)
    # the loader: a frame gets views, a still image none (its sample lacks the task)
    transform = train_transform({"motion_segmentation": task}, 32)
    with_mask = transform(Sample("frame", frame, {"motion_segmentation": mask}), torch.Generator().manual_seed(2), 0)
    assert set(with_mask.targets) == {"motion_segmentation"}
    assert set(with_mask.targets["motion_segmentation"]) == {"frame", "mask"}
    assert transform(Sample("still", frame), torch.Generator().manual_seed(2), 1).targets == {}


def test_loss_is_per_pixel_binary_cross_entropy(trunk) -> None:
    task = MotionSegmentationTask(view_size=32, hidden_dim=16)
    frames = [_frame_and_mask(seed) for seed in range(3)]
    views = [task.make_views(f, torch.Generator().manual_seed(i), mask=m) for i, (f, m) in enumerate(frames)]
    batch = task.collate([views[0], None, views[1], views[2]])
    head = task.build_head(trunk.spec)
    output = task.forward_views(head, trunk.features, batch)
    assert output["logits"].shape == (3, 32, 32)
    loss = task.loss(output, batch)["loss"]
    p = torch.sigmoid(output["logits"].detach().double())
    y = output["mask"].double()
    naive = -(y * torch.log(p) + (1 - y) * torch.log(1 - p)).mean()
    assert math.isclose(float(loss.detach()), float(naive), rel_tol=1e-5)
    loss.backward()
    for owner, module in (("trunk", trunk), ("head", head)):
        for name, parameter in module.named_parameters():
            assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), f"{owner}.{name}"
    predictions = task.predict(output)
    assert len(predictions) == 3 and predictions[0].shape == (32, 32)
    metric = task.metric()
    metric.update(output, batch)
    assert set(metric.compute()) == {"iou", "pixel_accuracy"}
    drawn = task.draw(np.zeros((48, 48, 3), dtype=np.uint8), predictions[0])
    assert drawn.dtype == np.uint8 and drawn.shape == (48, 48, 3)
    empty = task.collate([None, None])
    assert task.forward_views(head, trunk.features, empty) is None
    assert float(task.loss(None, empty)["loss"]) == 0.0


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_clips("video", tmp_path_factory.mktemp("clips") / "video", count=6, size=32,
                          seed=0, frames=3, progress=False)


def test_a_tiny_model_learns_the_worlds_motion_masks(clips: Path, trunk, train) -> None:
    """40 Adam steps on the frames of 6 clips: the moving pixels are found beyond the trivial
    predictors, all-background (IoU 0, accuracy = the static fraction) and all-moving (IoU = the
    moving fraction), on the training crops and, less well, on fresh crops of the frames."""
    dataset = open_dataset(DatasetConfig(format="video", root=str(clips)))
    # few pixels move (8%): weighted up, so that objects which may move cross probability 0.5
    task = MotionSegmentationTask(view_size=32, hidden_dim=16, crop_scale=(0.8, 1.0), positive_weight=8.0)
    samples = [dataset[i] for i in range(len(dataset))]

    def views(seed: int):
        generator = torch.Generator().manual_seed(seed)
        return task.collate([task.sample_views(sample, generator) for sample in samples])

    def scores(batch) -> tuple[dict[str, float], float]:
        with torch.no_grad():
            output = task.forward_views(head, trunk.features, batch)
        metric = task.metric()
        metric.update(output, batch)
        return metric.compute(), float(batch.value["mask"].float().mean())

    torch.manual_seed(0)
    head = task.build_head(trunk.spec)
    seen = views(0)
    losses = train(task, trunk, seen, steps=40, lr=1e-2, head=head)
    assert losses.ratio < 0.5, losses
    values, moving = scores(seen)
    assert values["iou"] > 0.4 and values["pixel_accuracy"] > 1 - moving + 0.02, (values, moving)
    values, moving = scores(views(1))
    assert values["iou"] > 2 * moving, (values, moving)


def test_positive_weight_weighs_the_moving_pixels() -> None:
    logits = torch.tensor([[[2.0, -1.0], [0.5, -3.0]]])
    mask = torch.tensor([[[1, 0], [1, 0]]], dtype=torch.uint8)
    p, y = torch.sigmoid(logits.double()), mask.double()
    naive = -(3.0 * y * torch.log(p) + (1 - y) * torch.log(1 - p)).mean()
    loss = MotionSegmentationTask(positive_weight=3.0).view_loss({"logits": logits, "mask": mask})["loss"]
    assert math.isclose(float(loss), float(naive), rel_tol=1e-6)
    with pytest.raises(ValueError, match="positive_weight"):
        MotionSegmentationTask(positive_weight=0.0)


@pytest.mark.parametrize("options", [{"positive_weight": 0.0}, {"crop_scale": (0.0, 1.0)}])
def test_a_bad_option_is_a_config_error_naming_the_task(options: dict) -> None:
    """What a user writes under task_options is refused as a ConfigError naming the task (the
    command line prints it instead of a traceback)."""
    from must.tasks import construct

    with pytest.raises(ConfigError, match="task 'motion_segmentation'"):
        construct("motion_segmentation", MotionSegmentationTask, options)
