"""Every self-supervised method through the common interface: registry, deterministic views,
collate with an absent image, forward on the views, a finite loss whose gradient reaches every
parameter of trunk and head, prediction, metric, drawing."""

import copy
import textwrap
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from must.config import ConfigError
from must.data.geometry import Geometry
from must.data.loader import make_loader, train_transform
from must.data.sample import Sample, TaskBatch
from must.models import ModelConfig, build_model
from must.tasks.classification import ClassificationTask
from must.tasks.segmentation import SegmentationTask
from must.tasks.self_supervised import (
    SEMI_SUPERVISED_TASKS,
    SELF_SUPERVISED_TASKS,
    ColorizationTask,
    ExemplarTask,
    FixMatchTask,
    FlexMatchTask,
    FreeMatchTask,
    JigsawTask,
    PirlTask,
    RelativePositionTask,
    RotationTask,
    SelfSupervisedTask,
    SimCLRTask,
    SoftMatchTask,
    UDATask,
)

BUILDERS: dict[str, Callable[[], SelfSupervisedTask]] = {
    "simclr": lambda: SimCLRTask(view_size=32, projection_dim=16, hidden_dim=32),
    "pirl": lambda: PirlTask(view_size=48, tile_size=14, bank_size=8, num_negatives=16),
    "rotation": lambda: RotationTask(view_size=32, hidden_dim=32),
    "jigsaw": lambda: JigsawTask(view_size=48, tile_size=14, num_permutations=10, tile_dim=16, hidden_dim=32),
    "relative_position": lambda: RelativePositionTask(view_size=48, patch_size=14, gap=2, jitter=1,
                                                      embedding_dim=16, hidden_dim=32),
    "colorization": lambda: ColorizationTask(view_size=32, hidden_dim=16),
    "exemplar": lambda: ExemplarTask(view_size=32, num_instances=16, hidden_dim=32),
    "fixmatch_classification": lambda: FixMatchTask(ClassificationTask(5), threshold=0.0, view_size=32),
    "fixmatch_segmentation": lambda: FixMatchTask(SegmentationTask(3), threshold=0.0, view_size=32),
    "flexmatch_classification": lambda: FlexMatchTask(ClassificationTask(5), view_size=32),
    "freematch_classification": lambda: FreeMatchTask(ClassificationTask(5), view_size=32),
    "freematch_segmentation": lambda: FreeMatchTask(SegmentationTask(3), view_size=32),
    "softmatch_classification": lambda: SoftMatchTask(ClassificationTask(5), view_size=32),
    "softmatch_segmentation": lambda: SoftMatchTask(SegmentationTask(3), view_size=32),
    "uda_classification": lambda: UDATask(ClassificationTask(5), threshold=0.0, view_size=32),
    "uda_segmentation": lambda: UDATask(SegmentationTask(3), threshold=0.0, view_size=32),
}

PIXEL_TASKS = {"colorization", *(name for name in BUILDERS if name.endswith("_segmentation"))}
TWO_VIEW_METHODS = {"byol", "mocov2", "mocov3", "dino", "barlow_twins", "vicreg", "simsiam"}
"""Tested on a real tiny model in ``test_two_view_methods.py`` (the momentum ones copy its backbone)."""


def test_registry_names_match_tasks() -> None:
    plain = {name for name in BUILDERS if name.partition("_")[0] not in {"fixmatch", "flexmatch", "freematch",
                                                                         "softmatch", "uda"}}
    # motion segmentation needs a mask with each image: tested in test_motion_segmentation; MAE a
    # ViT trunk: tested in test_mae
    assert set(SELF_SUPERVISED_TASKS) == plain | TWO_VIEW_METHODS | {"motion_segmentation", "mae"}
    assert not set(SELF_SUPERVISED_TASKS) & set(SEMI_SUPERVISED_TASKS)
    for name, builder in SELF_SUPERVISED_TASKS.items():
        assert builder().name == name
    assert FixMatchTask(ClassificationTask(3)).name == "fixmatch_classification"


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_views_are_reproducible(name: str, photos: list[torch.Tensor]) -> None:
    task = BUILDERS[name]()
    first = task.make_views(photos[0], torch.Generator().manual_seed(3), index=0)
    again = task.make_views(photos[0], torch.Generator().manual_seed(3), index=0)
    assert first.keys() == again.keys()
    for view in first:
        assert torch.equal(first[view], again[view])
    assert task.transform_target(first, Geometry.identity((64, 64))) is first


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_forward_loss_gradients(name: str, photos: list[torch.Tensor], trunk) -> None:
    task = BUILDERS[name]()
    generator = torch.Generator().manual_seed(0)
    views = [task.make_views(photo, generator, index=i) for i, photo in enumerate(photos)]
    batch = task.collate([views[0], None, views[1], views[2]])  # image 1 has no views
    assert batch.present.tolist() == [True, False, True, True]
    head = task.build_head(trunk.spec)
    output = task.forward_views(head, trunk.features, batch)
    losses = task.loss(output, batch)
    assert torch.isfinite(losses["loss"]) and losses["loss"].dim() == 0
    losses["loss"].backward()
    # Heads on C5 leave the pyramid unused; pixel heads (fused P2) use all of it.
    reads_pyramid = name in PIXEL_TASKS
    for owner, module in (("trunk", trunk), ("head", head)):
        for parameter_name, parameter in module.named_parameters():
            if parameter_name.startswith("laterals") and not reads_pyramid:
                assert parameter.grad is None
                continue
            assert parameter.grad is not None, f"{owner}.{parameter_name} got no gradient"
            assert torch.isfinite(parameter.grad).all()
    predictions = task.predict(output)
    assert len(predictions) >= 3
    metric = task.metric()
    metric.update(output, batch)
    values = metric.compute()
    assert task.primary_metric in values and all(np.isfinite(v) for v in values.values())
    drawn = task.draw(np.zeros((48, 48, 3), dtype=np.uint8), predictions[0])
    assert drawn.dtype == np.uint8 and drawn.ndim == 3 and drawn.shape[1] == 48


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_batch_without_views(name: str, trunk) -> None:
    task = BUILDERS[name]()
    batch = task.collate([None, None])
    assert batch.count == 0
    head = task.build_head(trunk.spec)
    assert task.forward_views(head, trunk.features, batch) is None
    assert task.forward_views(head, trunk.features, None) is None
    assert float(task.loss(None, batch)["loss"]) == 0.0


def test_pseudo_labels_are_refused() -> None:
    with pytest.raises(NotImplementedError, match="self-supervised"):
        RotationTask().to_pseudo_label(torch.zeros(4))


def test_collate_rejects_mismatched_views() -> None:
    task = RotationTask()
    good = {"images": torch.zeros(4, 3, 8, 8, dtype=torch.uint8), "labels": torch.arange(4)}
    bad = {"images": torch.zeros(4, 3, 9, 9, dtype=torch.uint8), "labels": torch.arange(4)}
    with pytest.raises(ValueError, match="different shapes"):
        task.collate([good, bad])
    assert isinstance(task.collate([good, None]), TaskBatch)


@pytest.mark.parametrize("name", ["rotation", "colorization", "pirl"])
def test_real_resnet_fpn_trunk(name: str, photos: list[torch.Tensor]) -> None:
    """The views go through the real model's ``features`` (narrow ResNet-18 + FPN) and head."""
    task = BUILDERS[name]()
    model = build_model(ModelConfig(backbone="resnet18", width=0.25, fpn_channels=16), {name: task})
    generator = torch.Generator().manual_seed(0)
    views = [task.make_views(photo, generator, index=i) for i, photo in enumerate(photos[:2])]
    batch = task.collate(views)
    output = task.forward_views(model.heads[task.head_name], model.features, batch)
    loss = task.loss(output, batch)["loss"]
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None for p in model.heads[name].parameters())
    assert model.backbone.conv1.weight.grad is not None


WORKER = textwrap.dedent(
    """
    import json, sys
    from collections import OrderedDict
    import torch
    from must import distributed
    from must.models.features import Features, FeatureSpec
    from must.tasks.self_supervised import PirlTask, SimCLRTask

    class Trunk(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 8, 4, 4)
        def features(self, images):
            c5 = self.conv(images)
            return Features(tuple(images.shape[-2:]), OrderedDict(c5=c5), OrderedDict(p2=c5))

    info = distributed.setup(torch.device("cpu"))
    torch.manual_seed(0)  # the same trunk, heads and initial bank on both ranks
    trunk, spec = Trunk(), FeatureSpec(c5_channels=8, fpn_channels=8)
    pirl = PirlTask(view_size=24, tile_size=8, bank_size=8, num_negatives=4, embedding_dim=4, tile_dim=4)
    simclr = SimCLRTask(view_size=16, projection_dim=4, hidden_dim=8)
    heads = {"pirl": pirl.build_head(spec), "simclr": simclr.build_head(spec)}
    initial_bank = heads["pirl"].bank.clone()
    generator = torch.Generator().manual_seed(1)
    images = [torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8, generator=generator) for _ in range(4)]
    results = {}
    for step in range(2):
        for name, task in (("pirl", pirl), ("simclr", simclr)):
            # Step 0: rank 1 has no image with this task's views; step 1: both have two.
            mine = [] if info.rank == 1 and step == 0 else [2 * info.rank, 2 * info.rank + 1]
            views = [task.make_views(images[i], torch.Generator().manual_seed(i), index=i)
                     if i in mine else None for i in range(4)]
            batch = task.collate(views)
            output = task.forward_views(heads[name], trunk.features, batch)
            loss = task.loss(output, batch)["loss"]
            results[f"{name}{step}"] = loss.item()
    bank = heads["pirl"].bank
    results["bank"] = bank.tolist()
    results["changed"] = (bank != initial_bank).any(dim=1).tolist()
    results["normalizer"] = float(heads["pirl"].normalizer)
    with open(sys.argv[1] + f"/rank{info.rank}.json", "w") as f:
        json.dump(results, f)
    distributed.teardown()
    """
)


def test_two_process_ranks_without_views(tmp_path: Path, run_worker) -> None:
    """Under DDP a rank whose batch has no views still joins SimCLR's gather and PIRL's bank and
    normalizer collectives (no hang), and the memory banks of all ranks stay identical."""
    results = run_worker(WORKER, tmp_path)
    assert results[0]["bank"] == results[1]["bank"]
    assert results[0]["normalizer"] == results[1]["normalizer"] > 0
    slots = set(range(4))
    assert {slot for slot, changed in enumerate(results[0]["changed"]) if changed} == slots
    assert results[1]["pirl0"] == 0.0 and results[1]["simclr0"] == 0.0
    assert results[0]["pirl0"] > 0 and results[0]["simclr0"] > 0
    assert all(result[f"{name}1"] > 0 for result in results for name in ("pirl", "simclr"))


class KeyedImages(torch.utils.data.Dataset):
    """``count`` images keyed ``image0``, ``image1``...: two such datasets share every key."""

    def __init__(self, count: int) -> None:
        self.count = count

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, item: int) -> Sample:
        generator = torch.Generator().manual_seed(item)
        return Sample(f"image{item}", torch.randint(0, 256, (3, 24, 32), dtype=torch.uint8, generator=generator))


INSTANCE_TASKS: dict[str, tuple[Callable[[int], SelfSupervisedTask], str]] = {
    "exemplar": (lambda size: ExemplarTask(view_size=16, num_instances=size, views_per_image=1), "instance"),
    "pirl": (lambda size: PirlTask(view_size=24, tile_size=8, bank_size=size), "index"),
}


def instance_ids(task: SelfSupervisedTask, view: str, datasets: list, batch_size: int, steps: int,
                 start_step: int = 0) -> dict[str, set[int]]:
    """``key -> the ids its images got`` over ``steps`` batches of a fresh loader."""
    stream = make_loader(datasets, [task], batch_size, seed=5, output_size=16, start_step=start_step)
    ids: dict[str, set[int]] = {}
    for _ in range(steps):
        batch = next(stream)
        for key, value in zip(batch.keys, batch.targets[task.name].value[view].tolist()):
            ids.setdefault(key, set()).add(value)
    return ids


@pytest.mark.parametrize("name", sorted(INSTANCE_TASKS))
def test_instance_ids_are_distinct_and_survive_a_resume(name: str) -> None:
    """PIRL's memory-bank slot and exemplar's surrogate class: one distinct id per image, also
    across two datasets with the same keys, and the same ids from a new loader resumed later."""
    builder, view = INSTANCE_TASKS[name]
    count = 48  # 2 x 48 keys hashed into 96 slots would put about a third on a shared slot
    task = builder(2 * count)
    datasets = [KeyedImages(count), KeyedImages(count)]
    first = instance_ids(task, view, datasets, batch_size=2 * count, steps=1)
    ids = [value for values in first.values() for value in values]
    assert len(first) == count and len(ids) == 2 * count  # every key twice: once per dataset
    assert sorted(ids) == list(range(2 * count))
    resumed = instance_ids(builder(2 * count), view, datasets, batch_size=2 * count, steps=1, start_step=7)
    assert resumed == first


@pytest.mark.parametrize("name", sorted(INSTANCE_TASKS))
def test_too_few_instances_is_refused_by_name(name: str) -> None:
    builder, _ = INSTANCE_TASKS[name]
    option = {"exemplar": "num_instances", "pirl": "bank_size"}[name]
    with pytest.raises(ConfigError, match=f"{option}=10 is smaller than the 12 training images"):
        make_loader([KeyedImages(12)], [builder(10)], 4, seed=0, output_size=16)


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_views_hold_no_padding(name: str) -> None:
    """Views come from the image, not from the scale-jittered canvas: at scale 0.5 the canvas is
    three-quarters black padding, yet no view pixel of a constant orange image is black."""
    task = BUILDERS[name]()
    if name == "exemplar":  # its rotation (Dosovitskiy et al. sec. 2.1) fills corners with black
        task.transform = task.transform.transforms[0]
    transform = train_transform([task], output_size=64, scale_range=(0.5, 0.5))
    orange = torch.tensor([230, 140, 40], dtype=torch.uint8)[:, None, None].expand(3, 48, 72).clone()
    for seed in range(6):
        sample = transform(Sample("orange", orange), torch.Generator().manual_seed(seed), 0)
        assert (sample.image.amax(dim=0) == 0).any()  # the supervised canvas is padded
        for view_name, view in sample.targets[task.name].items():
            if view.dtype != torch.uint8 or view.dim() < 3 or view_name == "strong":
                continue  # labels, indices, colour bins; RandAugment's shifts fill with black
            brightest = view.unflatten(-3, (-1, 3)).amax(dim=-3) if view.shape[-3] % 3 == 0 else view
            assert int(brightest.min()) > 0, f"{view_name}: a black (padding) pixel"


def running_mean(model: torch.nn.Module) -> torch.Tensor:
    return model.backbone.bn1.running_mean.clone()


def test_views_leave_the_supervised_running_statistics() -> None:
    """With a supervised task in the pass, the views of a self-supervised task normalize by their
    own batch but do not move the trunk's BatchNorm running averages; without one (pre-training)
    they do."""
    simclr = SimCLRTask(view_size=32, projection_dim=8, hidden_dim=16)
    tasks = {"classification": ClassificationTask(3), "simclr": simclr}
    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone="resnet18", width=0.25, fpn_channels=16), tasks).train()
    initial = copy.deepcopy(model.state_dict())
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(2, 3, 32, 32, generator=generator)
    photos = [torch.full((3, 40, 40), value, dtype=torch.uint8) for value in (30, 250)]  # unlike images
    targets = {"classification": tasks["classification"].collate([torch.tensor(0), torch.tensor(2)]),
               "simclr": simclr.collate([simclr.make_views(photo, generator) for photo in photos])}

    model(images, {"classification": targets["classification"]}, tasks=["classification"])
    supervised_only = running_mean(model)
    assert not torch.equal(supervised_only, initial["backbone.bn1.running_mean"])
    model.load_state_dict(initial)
    model(images, targets)  # both tasks: one supervised pass, one pass over the views
    assert torch.equal(running_mean(model), supervised_only)
    assert model.backbone.bn1.track_running_stats  # restored after the view pass
    model.load_state_dict(initial)
    model(None, targets, tasks=["simclr"])  # views only: self-supervised pre-training
    assert not torch.equal(running_mean(model), initial["backbone.bn1.running_mean"])
