"""Any timm backbone in the multi-task model, one model per family (the smallest timm ships): all
five supervised tasks at 64 px, gradients to every parameter, checkpoint round trip, and a state
dict written by timm loaded so that the trunk computes exactly what timm's own model computes."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file

from must.data.sample import TaskBatch
from must.models import ModelConfig, MultiTaskModel, build_backbone, build_model, load_checkpoint, load_initial_weights
from must.models.vit import VisionTransformerBackbone
from must.tasks import build_task
from must.train.checkpoint import save_atomically

FAMILIES = ["convnext_atto", "efficientnet_b0", "regnetx_002", "mobilenetv3_small_050", "vit_tiny_patch16_224"]
SIZE = 64


def five_tasks() -> dict:
    return {
        "classification": build_task("classification", num_classes=3),
        "detection": build_task("detection", num_classes=3, box_batch_size_per_image=16, representation_size=32),
        "segmentation": build_task("segmentation", num_classes=4, hidden_channels=8),
        "depth": build_task("depth", hidden_channels=8),
        "normals": build_task("normals", hidden_channels=8),
    }


def targets(tasks: dict) -> dict[str, TaskBatch]:
    generator = torch.Generator().manual_seed(0)
    normals = torch.randn(2, 3, SIZE, SIZE, generator=generator)
    boxes = [{"boxes": torch.tensor([[4.0, 6.0, 28.0, 30.0], [34.0, 20.0, 60.0, 44.0]]), "labels": torch.tensor([0, 1])},
             {"boxes": torch.tensor([[20.0, 20.0, 44.0, 40.0]]), "labels": torch.tensor([2])}]
    per_image = {
        "classification": [torch.tensor(0), torch.tensor(2)],
        "detection": boxes,
        "segmentation": list(torch.randint(0, 4, (2, SIZE, SIZE), generator=generator)),
        "depth": list(torch.rand(2, SIZE, SIZE, generator=generator) + 0.5),
        "normals": list(normals / normals.norm(dim=1, keepdim=True)),
    }
    return {name: task.collate(per_image[name]) for name, task in tasks.items()}


def build(name: str, tasks: dict) -> MultiTaskModel:
    # The demo's width 0.25 is a torchvision-ResNet option: a timm model ignores it.
    return build_model(ModelConfig(backbone=f"timm:{name}", width=0.25, fpn_channels=16), tasks)


@pytest.fixture(scope="module", params=FAMILIES)
def family(request: pytest.FixtureRequest) -> tuple[str, MultiTaskModel, dict]:
    tasks = five_tasks()
    return request.param, build(request.param, tasks), tasks


def test_every_task_trains_and_every_parameter_gets_a_gradient(family) -> None:
    _, model, tasks = family
    model.train().zero_grad()
    batch = targets(tasks)
    outputs = model(torch.rand(2, 3, SIZE, SIZE), batch)
    losses = {name: task.loss(outputs[name], batch[name])["loss"] for name, task in tasks.items()}
    assert all(torch.isfinite(loss) for loss in losses.values()), losses
    sum(losses.values()).backward()
    without = [name for name, parameter in model.named_parameters()
               if parameter.requires_grad and (parameter.grad is None or not torch.isfinite(parameter.grad).all())]
    assert not without
    assert model.eval()(torch.rand(1, 3, SIZE, SIZE), tasks=["segmentation"])["segmentation"].shape[-2:] == (SIZE, SIZE)


def test_checkpoint_round_trip(family, tmp_path: Path) -> None:
    name, model, tasks = family
    save_atomically({"model": model.state_dict()}, tmp_path / "checkpoint.pt")
    restored = build(name, five_tasks())
    report = load_checkpoint(restored, tmp_path / "checkpoint.pt", heads=True)
    assert not report.missing and not report.unexpected and not report.skipped
    images = torch.rand(2, 3, SIZE, SIZE)
    wanted = model.eval()(images, tasks=["classification", "depth"])
    got = restored.eval()(images, tasks=["classification", "depth"])
    for task in wanted:
        torch.testing.assert_close(got[task], wanted[task])


def timm_reference(name: str, path: Path) -> torch.nn.Module:
    """timm's own model with the weights of ``path`` loaded by timm (``pretrained_cfg_overlay``)."""
    options = {"dynamic_img_size": True, "dynamic_img_pad": True} if name.startswith("vit") else {}
    return timm.create_model(name, pretrained=True, pretrained_cfg_overlay={"file": str(path)}, **options).eval()


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_a_timm_state_dict_loads_and_the_trunk_computes_what_timm_does(family, tmp_path: Path, suffix: str) -> None:
    name, model, _ = family
    state = {key: value.clone() for key, value in timm.create_model(name, pretrained=False).state_dict().items()}
    for value in state.values():  # running statistics away from their initial 0 / 1
        if value.is_floating_point():
            value.add_(0.01 * torch.randn_like(value))
    path = tmp_path / f"{name}{suffix}"
    save_file(state, path) if suffix == ".safetensors" else torch.save(state, path)
    report = load_initial_weights(model, path)
    assert not report.unexpected and report.skipped, report
    assert all(key.startswith("backbone.pyramid.") for key in report.missing), report.missing
    images = torch.rand(2, 3, SIZE, SIZE)
    backbone = model.backbone.eval()
    reference = timm_reference(name, path)
    with torch.no_grad():
        ours = backbone(images)
        theirs = reference.forward_intermediates(images, indices=backbone.indices, intermediates_only=True)
    if isinstance(backbone, VisionTransformerBackbone):
        torch.testing.assert_close(ours["c4"], theirs[-1])  # the tokens the pyramid is built from
    else:
        for level, expected in zip(ours.values(), theirs, strict=True):
            torch.testing.assert_close(level, expected)
        features = timm.create_model(name, features_only=True, out_indices=backbone.indices, pretrained=True,
                                     pretrained_cfg_overlay={"file": str(path)}).eval()
        with torch.no_grad():
            torch.testing.assert_close(list(ours.values()), features(images))  # timm's features_only


def test_vit_position_embedding_is_resampled_from_another_image_size(tmp_path: Path) -> None:
    state = timm.create_model("vit_tiny_patch16_384", pretrained=False).state_dict()  # a 24 x 24 grid
    torch.save(state, tmp_path / "vit384.pth")
    backbone = build_backbone("timm:vit_tiny_patch16_224")
    kept, _ = backbone.classifier_state(state)
    assert kept["trunk.pos_embed"].shape == backbone.trunk.pos_embed.shape == (1, 1 + 14 * 14, 192)
    features = backbone.eval()(torch.rand(1, 3, 96, 64))
    assert [tuple(level.shape[-2:]) for level in features.values()] == [(24, 16), (12, 8), (6, 4), (3, 2)]


@pytest.mark.parametrize("name, channels, height, width", [
    ("vit_tiny_patch16_224", (48, 96, 192, 192), 64, 64),
    ("vit_tiny_patch16_224", (48, 96, 192, 192), 100, 72),
    ("deit_tiny_distilled_patch16_224", (48, 96, 192, 192), 64, 96),  # two prefix tokens
    ("vit_small_patch14_dinov2", (96, 192, 384, 384), 100, 72),  # 14 px patches, made for 518 px
])
def test_vit_pyramid_levels_have_resnet_sizes(name: str, channels: tuple, height: int, width: int) -> None:
    backbone = build_backbone(f"timm:{name}")
    assert isinstance(backbone, VisionTransformerBackbone) and backbone.stage_channels == channels
    levels = backbone(torch.rand(1, 3, height, width))
    for level, stride in zip(levels.values(), (4, 8, 16, 32), strict=True):
        assert tuple(level.shape[-2:]) == (-(-height // stride), -(-width // stride))


def test_drop_path_is_model_noise_for_a_vit() -> None:
    plain = build_backbone("timm:vit_tiny_patch16_224")
    noisy = build_backbone("timm:vit_tiny_patch16_224", drop_path_rate=0.5)
    noisy.load_state_dict(plain.state_dict())
    images = torch.rand(2, 3, SIZE, SIZE)
    plain.eval(), noisy.eval()
    torch.testing.assert_close(noisy(images)["c4"], plain(images)["c4"])
    noisy.train(), plain.train()
    assert not torch.allclose(noisy(images)["c4"], plain(images)["c4"])
