"""MultiTaskModel: one trunk pass shared by every head; gradients, task subsets, targets, config."""

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from must.config import ConfigError, from_dict
from must.data.sample import TaskBatch
from must.models import FeatureSpec, ModelConfig, MultiTaskModel, build_backbone, build_model
from must.models.features import Features
from must.models.fpn import FeaturePyramid


class PooledC5Head(nn.Module):
    """Like the classification head: global average pool of C5 + linear."""

    def __init__(self, spec: FeatureSpec, classes: int = 5) -> None:
        super().__init__()
        self.linear = nn.Linear(spec.c5_channels, classes)

    def forward(self, features: Features, target: TaskBatch | None = None) -> Tensor:
        return self.linear(features.c5.mean(dim=(-2, -1)))


class FusedP2Head(nn.Module):
    """Like a pixel head: a conv on fused P2, upsampled to the image."""

    def __init__(self, spec: FeatureSpec, outputs: int = 2) -> None:
        super().__init__()
        self.conv = nn.Conv2d(spec.fpn_channels, outputs, 3, padding=1)

    def forward(self, features: Features, target: TaskBatch | None = None) -> Tensor:
        return F.interpolate(self.conv(features.fused_p2), size=features.image_size, mode="bilinear")


class RecordingHead(PooledC5Head):
    """Remembers the targets it was called with."""

    def __init__(self, spec: FeatureSpec) -> None:
        super().__init__(spec)
        self.calls: list[TaskBatch | None] = []

    def forward(self, features: Features, target: TaskBatch | None = None) -> Tensor:
        self.calls.append(target)
        return super().forward(features, target)


class DummyTask:
    """Only what build_model needs of a Task: build_head(spec), and that it makes no views."""

    makes_views = False

    def __init__(self, head_type: type[nn.Module]) -> None:
        self.head_type = head_type
        self.specs: list[FeatureSpec] = []

    def build_head(self, spec: FeatureSpec) -> nn.Module:
        self.specs.append(spec)
        return self.head_type(spec)


def tiny_model(norm: str = "batch", name: str = "resnet18", width: float = 0.25) -> MultiTaskModel:
    backbone = build_backbone(name, width, norm=norm)
    fpn = FeaturePyramid(backbone.stage_channels, 16)
    spec = FeatureSpec(backbone.stage_channels[-1], 16, stage_channels=backbone.stage_channels)
    return MultiTaskModel(backbone, fpn, {"classify": PooledC5Head(spec), "dense": FusedP2Head(spec)})


@pytest.mark.parametrize("norm, name, width", [
    ("batch", "resnet18", 0.25), ("group", "resnet18", 0.25), ("frozen_batch", "resnet18", 0.25),
    ("batch", "timm:resnet18", 1.0),
])
def test_backward_reaches_every_trainable_parameter(norm, name, width):
    model = tiny_model(norm, name, width)
    images = torch.rand(2, 3, 64, 96)
    outputs = model(images)
    assert outputs["classify"].shape == (2, 5) and outputs["dense"].shape == (2, 2, 64, 96)
    loss = outputs["classify"].square().mean() + outputs["dense"].square().mean()
    assert torch.isfinite(loss)
    loss.backward()
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert trainable
    for name_, parameter in trainable:
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name_


def test_tasks_subset_runs_only_those_heads():
    backbone = build_backbone("resnet18", 0.25)
    fpn = FeaturePyramid(backbone.stage_channels, 16)
    spec = FeatureSpec(backbone.stage_channels[-1], 16)
    heads = {"a": RecordingHead(spec), "b": RecordingHead(spec)}
    model = MultiTaskModel(backbone, fpn, heads)
    outputs = model(torch.rand(2, 3, 64, 64), tasks=["b"])
    assert list(outputs) == ["b"]
    assert len(heads["a"].calls) == 0 and len(heads["b"].calls) == 1
    with pytest.raises(KeyError, match="no head for task"):
        model(torch.rand(2, 3, 64, 64), tasks=["c"])


def test_each_head_gets_its_own_targets():
    backbone = build_backbone("resnet18", 0.25)
    fpn = FeaturePyramid(backbone.stage_channels, 16)
    spec = FeatureSpec(backbone.stage_channels[-1], 16)
    heads = {"a": RecordingHead(spec), "b": RecordingHead(spec)}
    model = MultiTaskModel(backbone, fpn, heads)
    target = TaskBatch(torch.tensor([True, False]), torch.tensor([3, 0]))
    model(torch.rand(2, 3, 64, 64), targets={"a": target})
    assert heads["a"].calls == [target] and heads["b"].calls == [None]
    model(torch.rand(2, 3, 64, 64))
    assert heads["a"].calls[-1] is None


def test_features_normalize_with_the_models_mean_and_std():
    model = tiny_model().eval()
    images = torch.rand(2, 3, 64, 64)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    features = model.features(images)
    torch.testing.assert_close(features.c5, model.backbone((images - mean) / std)["c5"])
    assert features.image_size == (64, 64)
    assert list(features.pyramid) == ["p2", "p3", "p4", "p5", "p6", "p7"]
    assert "mean" not in model.state_dict()
    with pytest.raises(ValueError, match="float images"):
        model.features((images * 255).to(torch.uint8))


def test_spec_describes_the_trunk():
    spec = tiny_model().spec
    assert spec == FeatureSpec(c5_channels=128, fpn_channels=16, stage_channels=(16, 32, 64, 128))


def test_bfloat16_autocast_forward_and_backward():
    model = tiny_model()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        outputs = model(torch.rand(2, 3, 64, 64))
    assert outputs["dense"].dtype == torch.bfloat16
    (outputs["classify"].float().square().mean() + outputs["dense"].float().square().mean()).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.requires_grad)


def test_build_model_builds_one_head_per_task_for_the_trunks_spec():
    tasks = {"classify": DummyTask(PooledC5Head), "dense": DummyTask(FusedP2Head)}
    model = build_model(ModelConfig(width=0.25, fpn_channels=16), tasks)
    assert model.task_names == ["classify", "dense"]
    assert tasks["classify"].specs == [model.spec]
    assert model.spec.c5_channels == 128 and model.spec.fpn_channels == 16


@pytest.mark.parametrize("init_heads", [True, False])
def test_build_model_loads_its_init_checkpoint(tmp_path, init_heads):
    tasks = {"classify": DummyTask(PooledC5Head)}
    config = ModelConfig(width=0.25, fpn_channels=16)
    trained = build_model(config, tasks)
    torch.save({"model": trained.state_dict()}, tmp_path / "checkpoint.pt")
    config = ModelConfig(width=0.25, fpn_channels=16, init=str(tmp_path / "checkpoint.pt"), init_heads=init_heads)
    model = build_model(config, tasks)
    for key, value in trained.state_dict().items():
        if key.startswith(("backbone.", "fpn.")) or init_heads:
            assert torch.equal(model.state_dict()[key], value), key
    heads_equal = torch.equal(model.heads["classify"].linear.weight, trained.heads["classify"].linear.weight)
    assert heads_equal == init_heads


@pytest.mark.parametrize("data, key", [
    ({"backbone": "resnet19"}, "resnet18"),
    ({"backbone": "timm:not_a_model"}, "not_a_model"),
    ({"norm": "layer"}, "norm"),
    ({"width": 0}, "width"),
    ({"drop_path_rate": 1.5}, "drop_path_rate"),
    ({"fpn_chanels": 8}, "fpn_chanels"),
])
def test_model_config_rejects_bad_values(data, key):
    with pytest.raises(ConfigError, match=key):
        from_dict(ModelConfig, data)


def test_model_config_reads_from_yaml_data():
    config = from_dict(ModelConfig, {"backbone": "timm:resnet18d", "width": 1, "norm": "group",
                                     "mean": [0.5, 0.5, 0.5]})
    assert config.width == 1.0 and config.mean == (0.5, 0.5, 0.5)


def _fpn_calls(model: MultiTaskModel) -> list[int]:
    calls: list[int] = []
    model.fpn.register_forward_hook(lambda module, inputs, output: calls.append(1))
    return calls


def test_a_model_whose_heads_read_only_c5_does_not_run_the_fpn():
    """A classification teacher (pooled C5, MuST sec. 3.3) computes no pyramid; its checkpoint
    keeps the FPN's weights, so every stage loads the same layout."""
    from must.tasks import build_task

    config = ModelConfig(width=0.25, fpn_channels=16)
    classification = build_task("classification", num_classes=3)
    teacher = build_model(config, {"classification": classification}).eval()
    calls = _fpn_calls(teacher)
    images = torch.rand(2, 3, 64, 64)
    assert not teacher.runs_fpn and teacher(images)["classification"].shape == (2, 3)
    assert calls == [] and len(teacher.features(images).pyramid) == 0
    assert any(key.startswith("fpn.") for key in teacher.state_dict())
    student = build_model(config, {"classification": classification,
                                   "segmentation": build_task("segmentation", num_classes=4)}).eval()
    calls = _fpn_calls(student)
    student(images)
    assert student.runs_fpn and calls == [1]


def test_views_of_a_head_on_c5_skip_the_fpn_the_other_heads_read():
    """SimCLR, rotation, jigsaw, relative position, exemplar and PIRL read pooled C5: a model of
    them alone never runs the FPN, and beside a pixel head their view passes do not either (the
    supervised pass still does)."""
    from must.tasks import build_task
    from must.tasks.self_supervised import (ExemplarTask, JigsawTask, PirlTask, RelativePositionTask,
                                            RotationTask, SimCLRTask)

    config = ModelConfig(width=0.25, fpn_channels=16)
    for task in (SimCLRTask(view_size=32), RotationTask(view_size=32), JigsawTask(view_size=48, tile_size=14),
                 RelativePositionTask(view_size=48, patch_size=14, gap=2, jitter=1),
                 ExemplarTask(num_instances=4),
                 PirlTask(view_size=48, tile_size=14, bank_size=4)):
        assert not build_model(config, {task.name: task}).runs_fpn, task.name
    simclr = SimCLRTask(view_size=32, projection_dim=8)
    student = build_model(config, {"segmentation": build_task("segmentation", num_classes=4), "simclr": simclr})
    calls = _fpn_calls(student)
    generator = torch.Generator().manual_seed(0)
    photos = [torch.randint(0, 256, (3, 40, 40), dtype=torch.uint8) for _ in range(2)]
    views = simclr.collate([simclr.make_views(photo, generator) for photo in photos])
    output = student(None, {"simclr": views}, tasks=["simclr"])["simclr"]
    assert output["first"].shape == (2, 8) and calls == []
    student(torch.rand(2, 3, 64, 64), {"simclr": views})
    assert student.runs_fpn and calls == [1]
