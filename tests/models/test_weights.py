"""Weight files into the model: ours, torchvision and timm ResNets (.pt and .safetensors), errors."""

import collections

import pytest
import timm
import torch
import torchvision
from safetensors.torch import save_file
from torch import nn

from must.models import (
    CheckpointError,
    FeatureSpec,
    MultiTaskModel,
    build_backbone,
    load_backbone,
    load_checkpoint,
    load_initial_weights,
)
from must.models.fpn import FeaturePyramid
from must.models.weights import read_checkpoint_record


class PooledC5Head(nn.Module):
    def __init__(self, spec: FeatureSpec, classes: int = 5) -> None:
        super().__init__()
        self.linear = nn.Linear(spec.c5_channels, classes)

    def forward(self, features, target=None):
        return self.linear(features.c5.mean(dim=(-2, -1)))


def model_with(name: str = "resnet18", width: float = 1.0, norm: str = "batch",
               heads: dict[str, int] | None = None) -> MultiTaskModel:
    backbone = build_backbone(name, width, norm=norm)
    fpn = FeaturePyramid(backbone.stage_channels, 16)
    spec = FeatureSpec(backbone.stage_channels[-1], 16)
    return MultiTaskModel(backbone, fpn, {task: PooledC5Head(spec, k) for task, k in (heads or {}).items()})


def randomize(module: nn.Module) -> nn.Module:
    """Random values everywhere (running stats included), so equality means "loaded"."""
    with torch.no_grad():
        for tensor in module.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(torch.rand_like(tensor) + 0.5)
    return module


def assert_backbone_equals(model: MultiTaskModel, state: dict, skip: tuple[str, ...] = ("fc.",)) -> None:
    ours = model.backbone.state_dict()
    compared = 0
    for key, value in state.items():
        if key.startswith(skip) or key not in ours:
            continue
        assert torch.equal(ours[key], value), key
        compared += 1
    assert compared > 0


def test_torchvision_resnet_state_dict(tmp_path):
    classifier = randomize(torchvision.models.resnet18(weights=None)).eval()
    torch.save(classifier.state_dict(), tmp_path / "resnet18.pth")
    model = model_with("resnet18").eval()
    report = load_backbone(model, tmp_path / "resnet18.pth")
    assert_backbone_equals(model, classifier.state_dict())
    assert report.missing == [] and report.unexpected == []
    assert sorted(report.skipped) == ["fc.bias (classifier)", "fc.weight (classifier)"]
    assert len(report.loaded) == len(classifier.state_dict()) - 2
    # The trunk now computes what torchvision's network computes up to layer4.
    images = torch.rand(2, 3, 64, 64)
    trunk = nn.Sequential(*list(classifier.children())[:-2])
    torch.testing.assert_close(model.backbone(images)["c5"], trunk(images))


def test_torchvision_resnet50_state_dict(tmp_path):
    classifier = randomize(torchvision.models.resnet50(weights=None))
    torch.save(classifier.state_dict(), tmp_path / "resnet50.pt")
    model = model_with("resnet50")
    load_backbone(model, tmp_path / "resnet50.pt")
    assert_backbone_equals(model, classifier.state_dict())


def test_torchvision_weights_into_a_timm_backbone(tmp_path):
    classifier = randomize(torchvision.models.resnet18(weights=None))
    torch.save(classifier.state_dict(), tmp_path / "resnet18.pth")
    model = model_with("timm:resnet18")
    report = load_backbone(model, tmp_path / "resnet18.pth")
    assert_backbone_equals(model, classifier.state_dict())
    assert report.missing == [] and report.unexpected == []


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_timm_resnet_state_dict(tmp_path, suffix):
    classifier = randomize(timm.create_model("resnet18d", pretrained=False))
    path = tmp_path / f"resnet18d{suffix}"
    if suffix == ".safetensors":
        save_file(classifier.state_dict(), path)
    else:
        torch.save(classifier.state_dict(), path)
    model = model_with("timm:resnet18d")
    report = load_backbone(model, path)
    assert_backbone_equals(model, classifier.state_dict())
    assert report.missing == [] and report.unexpected == []


def test_timm_training_checkpoint_with_ddp_prefix(tmp_path):
    classifier = randomize(timm.create_model("resnet18", pretrained=False))
    state = collections.OrderedDict((f"module.{k}", v) for k, v in classifier.state_dict().items())
    torch.save({"epoch": 3, "arch": "resnet18", "state_dict": state}, tmp_path / "checkpoint.pth.tar")
    model = model_with("timm:resnet18")
    load_initial_weights(model, tmp_path / "checkpoint.pth.tar")
    assert_backbone_equals(model, classifier.state_dict())


@pytest.mark.parametrize("norm", ["frozen_batch", "group"])
def test_batch_norm_weights_into_other_norms(tmp_path, norm):
    classifier = randomize(torchvision.models.resnet18(weights=None))
    torch.save(classifier.state_dict(), tmp_path / "resnet18.pth")
    model = model_with("resnet18", norm=norm)
    report = load_backbone(model, tmp_path / "resnet18.pth")
    assert_backbone_equals(model, classifier.state_dict())
    assert report.missing == []
    if norm == "frozen_batch":
        assert report.unexpected == []  # running stats load; BatchNorm's step counter is ignored
    else:
        assert "backbone.bn1.running_mean" in report.unexpected  # GroupNorm has no running stats
        assert "running_mean" in str(report)


def ours(heads: dict[str, int]) -> MultiTaskModel:
    return randomize(model_with("resnet18", 0.25, heads=heads))


@pytest.mark.parametrize("wrap", [False, True])
def test_our_checkpoint_round_trips_with_heads(tmp_path, wrap):
    trained = ours({"classify": 5, "depth": 3})
    state = trained.state_dict()
    if wrap:  # saved from inside DistributedDataParallel
        state = {f"module.{key}": value for key, value in state.items()}
    torch.save({"model": state, "step": 100, "config": {"backbone": "resnet18"}}, tmp_path / "checkpoint.pt")
    model = model_with("resnet18", 0.25, heads={"classify": 5, "depth": 3})
    report = load_checkpoint(model, tmp_path / "checkpoint.pt", heads=True)
    for key, value in trained.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    assert report.missing == [] and report.unexpected == [] and report.skipped == []


def test_our_checkpoint_without_heads_and_with_mismatched_heads(tmp_path):
    trained = ours({"classify": 5, "depth": 3, "old": 2})
    torch.save({"model": trained.state_dict()}, tmp_path / "checkpoint.pt")
    model = model_with("resnet18", 0.25, heads={"classify": 100, "depth": 3, "new": 2})
    depth_before = model.heads["depth"].linear.weight.clone()
    report = load_checkpoint(model, tmp_path / "checkpoint.pt", heads=False)
    assert torch.equal(model.heads["depth"].linear.weight, depth_before)
    assert torch.equal(model.fpn.layer_blocks[0][0].weight, trained.fpn.layer_blocks[0][0].weight)
    assert all("heads not requested" in entry for entry in report.skipped)

    report = load_checkpoint(model, tmp_path / "checkpoint.pt", heads=True)
    assert torch.equal(model.heads["depth"].linear.weight, trained.heads["depth"].linear.weight)
    assert not torch.equal(model.heads["classify"].linear.bias[:5], trained.heads["classify"].linear.bias)
    skipped = " ".join(report.skipped)
    assert "heads.classify.* (linear.weight: file (5, 128) vs model (100, 128))" in skipped
    assert "heads.old.* (the model has no 'old' head)" in skipped
    assert report.missing == ["heads.new.*"]


def test_load_backbone_from_our_checkpoint_leaves_the_fpn(tmp_path):
    trained = ours({"classify": 5})
    torch.save({"model": trained.state_dict()}, tmp_path / "checkpoint.pt")
    model = model_with("resnet18", 0.25)
    fpn_before = model.fpn.layer_blocks[0][0].weight.clone()
    report = load_backbone(model, tmp_path / "checkpoint.pt")
    assert_backbone_equals(model, trained.backbone.state_dict(), skip=())
    assert torch.equal(model.fpn.layer_blocks[0][0].weight, fpn_before)
    assert any(entry.startswith("fpn.") for entry in report.skipped)


class NotATensor:
    pass


@pytest.mark.parametrize("content, message", [
    ("text", "cannot be read as a PyTorch weight file"),
    ({"epoch": 3}, "not a checkpoint"),
    ({"model": {}}, "not a checkpoint"),
    ({"foo.weight": torch.zeros(3)}, "none of its tensors fit the model's backbone"),
    ({"conv1.weight": NotATensor()}, "cannot be read as a PyTorch weight file"),
])
def test_wrong_files_fail_naming_the_file(tmp_path, content, message):
    path = tmp_path / "weights.pt"
    if content == "text":
        path.write_text("these are not weights\n")
    else:
        torch.save(content, path)
    with pytest.raises(CheckpointError, match=message) as error:
        load_backbone(model_with("resnet18", 0.25), path)
    assert str(path) in str(error.value)


def test_wrong_architecture_names_the_file_and_the_tensor(tmp_path):
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), tmp_path / "resnet18.pth")
    with pytest.raises(CheckpointError, match="do not fit") as error:
        load_backbone(model_with("resnet18", 0.25), tmp_path / "resnet18.pth")
    assert str(tmp_path / "resnet18.pth") in str(error.value)
    assert "backbone.conv1.weight: file (64, 3, 7, 7) vs model (16, 3, 7, 7)" in str(error.value)


def test_other_file_errors(tmp_path):
    model = model_with("resnet18", 0.25)
    with pytest.raises(CheckpointError, match="no such weight file"):
        load_backbone(model, tmp_path / "missing.pt")
    (tmp_path / "bad.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match="bad.safetensors"):
        load_backbone(model, tmp_path / "bad.safetensors")
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), tmp_path / "plain.pth")
    with pytest.raises(CheckpointError, match="load_backbone"):
        load_checkpoint(model, tmp_path / "plain.pth")


def test_the_record_is_read_through_a_memory_map(tmp_path, monkeypatch):
    """``read_checkpoint_record`` needs one small dict: the checkpoint's tensors are mapped, not
    read (a student checkpoint holds the weights, the optimizer state and the weight average)."""
    state = {"model": {"w": torch.ones(3)}, "model_record": {"input_transform": "lab"}}
    torch.save(state, tmp_path / "ours.pt")
    torch.save(state, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    save_file({"w": torch.ones(3)}, tmp_path / "weights.safetensors")
    loads = []
    load = torch.load

    def spy(*args, **kwargs):
        loads.append(kwargs.get("mmap", False))
        return load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    assert read_checkpoint_record(tmp_path / "ours.pt") == {"input_transform": "lab"} and loads == [True]
    assert read_checkpoint_record(tmp_path / "legacy.pt") == {"input_transform": "lab"}  # no map: read whole
    assert read_checkpoint_record(tmp_path / "weights.safetensors") == {}


@pytest.mark.parametrize("name, content", [("truncated.pt", None), ("garbage.pt", b"not a checkpoint"),
                                           ("garbage.safetensors", b"\x00" * 64)])
def test_an_unreadable_record_is_one_checkpoint_error_naming_the_file(tmp_path, name, content):
    path = tmp_path / name
    if content is None:
        torch.save({"model": {"w": torch.ones(1000)}, "model_record": {}}, path)
        content = path.read_bytes()[:-300]
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=name):
        read_checkpoint_record(path)
