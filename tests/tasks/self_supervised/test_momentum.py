"""The momentum head's start (BYOL sec. 3.2: the target starts at the online weights): once, at the
first training pass, not again after a restore, and without reading the flag from the device at
every step."""

from __future__ import annotations

import torch

from must.models import ModelConfig, MultiTaskModel, build_model
from must.tasks.self_supervised import BYOLTask
from must.tasks.self_supervised.momentum import MomentumHead

TINY = ModelConfig(backbone="resnet18", width=0.125, fpn_channels=16)


def _model() -> tuple[MultiTaskModel, MomentumHead]:
    torch.manual_seed(0)
    model = build_model(TINY, {"byol": BYOLTask(view_size=32, projection_dim=16, hidden_dim=32)})
    return model.train(), model.heads["byol"]


def _perturb(module: torch.nn.Module) -> None:
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.add_(torch.randn_like(parameter))


def _equal(first: torch.nn.Module, second: torch.nn.Module) -> bool:
    mine, theirs = first.state_dict(), second.state_dict()
    return all(torch.equal(mine[key], theirs[key]) for key in mine)


def test_a_fresh_head_copies_the_online_weights_on_the_first_training_pass() -> None:
    model, head = _model()
    _perturb(model.backbone)  # initial weights loaded after the model was built
    assert not _equal(head.target_backbone, model.backbone)
    head.eval()
    head.start()  # not a training pass
    assert not head.initialized and not _equal(head.target_backbone, model.backbone)
    head.train()
    head.start()
    assert head.initialized and _equal(head.target_backbone, model.backbone)
    assert _equal(head.target_projection, head.projection)


def test_a_restored_head_does_not_copy_the_online_weights_again() -> None:
    trained, head = _model()
    head.start()
    _perturb(trained.backbone)
    head.after_optimizer_step(1, 4)  # the target now lags the online weights
    restored, restored_head = _model()
    restored_head.start()  # a head that had started (e.g. loaded before), then restores a state
    restored.load_state_dict(trained.state_dict())
    restored_head.start()
    assert _equal(restored_head.target_backbone, head.target_backbone)
    assert not _equal(restored_head.target_backbone, restored.backbone)
    fresh, _ = _model()
    restored.load_state_dict(fresh.state_dict())  # a state from before the first pass
    assert not restored_head.initialized
    _perturb(restored.backbone)
    restored_head.start()
    assert restored_head.initialized and _equal(restored_head.target_backbone, restored.backbone)


def test_training_steps_do_not_read_the_flag_from_the_device() -> None:
    """Reading a device tensor in ``if`` waits for the device; once started, the head must not. A
    meta tensor (no data: reading it raises) stands in for the buffer after the first pass."""
    _, head = _model()
    head.start()
    head.initialized = torch.ones((), dtype=torch.bool, device="meta")
    for step in range(1, 4):
        head.start()
        head.after_optimizer_step(step, 4)
