"""MAE (He et al. 2022) on a real ViT-tiny: the loss is sec. 3's MSE over the masked patches
(per-patch normalized targets or raw ones) computed by hand; only the visible patches, embedded
as the trunk embeds them, go through the encoder; the head holds no trunk weights and the
optimizer trains exactly the model's parameters; a non-ViT backbone and a view the patches do not
tile are refused; prediction and drawing."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch
from torch import Tensor

from must.config import ConfigError
from must.models import ModelConfig, MultiTaskModel, build_model
from must.tasks.self_supervised import MAETask
from must.tasks.self_supervised import mae as mae_module
from must.train.config import TrainConfig
from must.train.optim import build_optimizer

VIT = ModelConfig(backbone="timm:vit_tiny_patch16_224")
SIZE = 64  # 4 x 4 patches of 16 px: 4 visible, 12 masked at ratio 0.75


def mae_model(task: MAETask) -> MultiTaskModel:
    torch.manual_seed(0)
    return build_model(VIT, {task.name: task})


def batch_of(task: MAETask, count: int = 3) -> object:
    generator = torch.Generator().manual_seed(1)
    images = [torch.randint(0, 256, (3, 80, 96), dtype=torch.uint8, generator=generator) for _ in range(count)]
    return task.collate([task.make_views(image, generator) for image in images])


@pytest.fixture
def fixed_mask(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[Tensor, Tensor]]]:
    """Replaces the random mask by a seeded permutation per image; yields the (visible, masked)
    index pairs the head used."""
    used: list[tuple[Tensor, Tensor]] = []

    def mask(size: tuple[int, int], mask_ratio: float, mask_class_token: bool = False,
             device: object = None) -> tuple[Tensor, Tensor]:
        batch, count = size
        keep = int(count * (1 - mask_ratio))
        generator = torch.Generator().manual_seed(7)
        order = torch.stack([torch.randperm(count, generator=generator) for _ in range(batch)])
        used.append((order[:, :keep], order[:, keep:]))
        return used[-1]
    monkeypatch.setattr(mae_module, "random_token_mask", mask)
    yield used


def patches_by_hand(images: Tensor, size: int) -> Tensor:
    """``[B, 3, H, W]`` -> ``[B, L, size * size * 3]``, patches in raster order (the order of the
    ViT's tokens), pixels row by row, channels last (MAE's ``patchify``)."""
    batch, channels, height, width = images.shape
    grid = images.reshape(batch, channels, height // size, size, width // size, size)
    return grid.permute(0, 2, 4, 3, 5, 1).reshape(batch, (height // size) * (width // size), -1)


@pytest.mark.parametrize("norm_pix_loss", [True, False])
def test_loss_is_the_mse_of_the_masked_patches(norm_pix_loss: bool, fixed_mask: list) -> None:
    task = MAETask(view_size=SIZE, norm_pix_loss=norm_pix_loss)
    model = mae_model(task)
    batch = batch_of(task)
    output = model(None, {"mae": batch})["mae"]
    loss = task.loss(output, batch)["loss"]

    _, masked = fixed_mask[-1]
    normalized = (batch.value["view"].float() / 255 - model.mean) / model.std
    patches = patches_by_hand(normalized, 16)
    errors = []
    for image in range(patches.shape[0]):
        for slot, patch in enumerate(masked[image].tolist()):
            target = patches[image, patch]
            if norm_pix_loss:
                target = (target - target.mean()) / (target.var(unbiased=True) + 1e-6).sqrt()
            errors.append(((output["prediction"][image, slot] - target) ** 2).mean())
    assert len(errors) == 3 * 12  # 75% of 16 patches per image
    torch.testing.assert_close(loss, torch.stack(errors).mean(), rtol=1e-5, atol=1e-6)


def test_only_visible_patches_enter_the_encoder_embedded_as_the_trunk_does(fixed_mask: list) -> None:
    task = MAETask(view_size=SIZE)
    model = mae_model(task)
    trunk = model.backbone.trunk
    seen: list[Tensor] = []
    handle = trunk.blocks[0].register_forward_hook(lambda module, inputs, output: seen.append(inputs[0]))
    batch = batch_of(task)
    try:
        model(None, {"mae": batch})
    finally:
        handle.remove()
    visible, _ = fixed_mask[-1]
    assert seen[0].shape[:2] == (3, 1 + 4)  # the class token and 25% of 16 patches
    # The kept tokens are the trunk's own patch + position embeddings at those positions.
    with torch.no_grad():
        normalized = (batch.value["view"].float() / 255 - model.mean) / model.std
        tokens = trunk._pos_embed(trunk.patch_embed(normalized))  # [B, 1 + 16, D], class token first
        expected = torch.cat([tokens[:, :1], torch.stack([tokens[b, 1 + visible[b]] for b in range(3)])], dim=1)
    torch.testing.assert_close(seen[0], expected)


def test_the_mask_ratio_sets_the_number_of_encoded_tokens() -> None:
    task = MAETask(view_size=SIZE, mask_ratio=0.5)
    model = mae_model(task)
    seen: list[int] = []
    model.backbone.trunk.blocks[0].register_forward_hook(lambda m, inputs, o: seen.append(inputs[0].shape[1]))
    output = model(None, {"mae": batch_of(task)})["mae"]
    assert seen == [1 + 8] and output["masked"].shape == (3, 8) and output["prediction"].shape == (3, 8, 768)


def test_head_holds_no_trunk_weights_and_the_optimizer_trains_the_model() -> None:
    task = MAETask(view_size=SIZE)
    model = mae_model(task)
    state = model.state_dict()
    head_keys = [key for key in state if key.startswith("heads.mae.")]
    assert head_keys and not any(".trunk." in key or ".vit." in key or "blocks.11" in key for key in head_keys)
    trunk_storages = {value.untyped_storage().data_ptr() for key, value in state.items()
                      if key.startswith("backbone.")}
    assert not any(state[key].untyped_storage().data_ptr() in trunk_storages for key in head_keys)
    optimizer = build_optimizer(model, TrainConfig(steps=1, batch_size=2, lr=0.1))
    optimized = [id(p) for group in optimizer.param_groups for p in group["params"]]
    assert len(optimized) == len(set(optimized))
    assert set(optimized) == {id(p) for p in model.parameters() if p.requires_grad}
    # every trainable parameter of trunk and head gets a gradient, but the pyramid / FPN (unused)
    batch = batch_of(task)
    task.loss(model(None, {"mae": batch})["mae"], batch)["loss"].backward()
    unreached = [name for name, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert unreached and all(name.startswith(("backbone.pyramid.", "fpn.")) for name in unreached), unreached


def test_a_resnet_backbone_is_refused_naming_the_option() -> None:
    task = MAETask(view_size=32)
    with pytest.raises(ConfigError, match="set model.backbone=timm:vit_tiny_patch16_224") as error:
        build_model(ModelConfig(backbone="resnet18", width=0.125, fpn_channels=16), {task.name: task})
    assert "\n" not in str(error.value) and "'resnet18'" in str(error.value)


def test_a_view_the_patches_do_not_tile_is_refused() -> None:
    task = MAETask(view_size=40)
    with pytest.raises(ConfigError, match="view_size 40 must be a multiple of the backbone's patch size 16"):
        build_model(VIT, {task.name: task})
    with pytest.raises(ConfigError, match="mask_ratio"):
        MAETask(mask_ratio=1.0)


def test_views_are_reproducible_crops_of_the_view_size() -> None:
    task = MAETask(view_size=32)
    image = torch.randint(0, 256, (3, 50, 70), dtype=torch.uint8)
    first = task.make_views(image, torch.Generator().manual_seed(3))
    again = task.make_views(image, torch.Generator().manual_seed(3))
    assert first["view"].shape == (3, 32, 32) and first["view"].dtype == torch.uint8
    assert torch.equal(first["view"], again["view"])


def test_prediction_metric_and_drawing() -> None:
    task = MAETask(view_size=SIZE)
    model = mae_model(task)
    batch = batch_of(task)
    output = model(None, {"mae": batch})["mae"]
    predictions = task.predict(output)
    assert len(predictions) == 3 and predictions[0].shape == (2, 3, SIZE, SIZE)
    assert 0 <= float(predictions[0].min()) and float(predictions[0].max()) <= 1
    metric = task.metric()
    metric.update(output, batch)
    assert metric.compute()["mse"] == pytest.approx(float(task.loss(output, batch)["loss"].detach()), rel=1e-5)
    drawn = task.draw(np.zeros((48, 48, 3), dtype=np.uint8), predictions[0])
    assert drawn.dtype == np.uint8 and drawn.shape == (48 + 24, 48, 3)
    assert task.loss(None, batch_of(task))["loss"].item() == 0.0


def test_the_report_knows_the_metric_is_an_error() -> None:
    """The reconstruction error is lower-is-better: the report must not rank it as an accuracy."""
    from must.report.results import lower_is_better

    assert lower_is_better(f"eval/mae/{MAETask.primary_metric}")
