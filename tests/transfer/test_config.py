"""The transfer config: the default suite's five columns, its fallback without Fashion-MNIST,
validation of grids, and a YAML round trip through the config machinery."""

from __future__ import annotations

from pathlib import Path

import pytest

from must import config as config_lib
from must.transfer.config import DownstreamTask, TransferConfig, default_suite, with_settings, world_splits


def test_default_suite_has_the_papers_five_columns(tmp_path: Path) -> None:
    fashion = tmp_path / "fashion"
    fashion.mkdir()
    suite = default_suite(tmp_path / "world", fashion)
    assert list(suite) == ["classification", "detection", "segmentation", "depth", "normals"]
    classification = suite["classification"]
    assert classification.train.format == "fashion_mnist" and classification.val is None
    assert classification.task_options == {"background_class": True}
    for name in ("detection", "segmentation", "depth", "normals"):
        assert suite[name].task == name
        assert [suite[name].train.root, suite[name].val.root, suite[name].test.root] == [
            str(tmp_path / "world" / split) for split in ("train", "val", "test")]
        assert suite[name].weight_decay == 1e-4


def test_without_fashion_mnist_classification_uses_the_world(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    suite = default_suite(tmp_path, tmp_path / "absent")
    assert suite["classification"].train == world_splits(tmp_path)["train"]
    assert suite["classification"].val is not None
    assert suite["classification"].substitutes == "fashion_mnist"  # recorded in every result
    assert f"warning: Fashion-MNIST not found at {tmp_path / 'absent'}" in capsys.readouterr().err
    chosen = default_suite(tmp_path, None)  # asked for: recorded, but no warning
    assert chosen["classification"].substitutes == "fashion_mnist" and capsys.readouterr().err == ""
    (tmp_path / "fashion").mkdir()
    assert default_suite(tmp_path, tmp_path / "fashion")["classification"].substitutes is None


def test_settings_for_every_task_are_validated(tmp_path: Path) -> None:
    suite = with_settings(default_suite(tmp_path, None), {"image_size": 32, "steps": [4]}, "every_task")
    assert {(task.image_size, task.steps) for task in suite.values()} == {(32, (4,))}
    with pytest.raises(config_lib.ConfigError, match="every_task.image_size: expected an integer"):
        with_settings(suite, {"image_size": "big"}, "every_task")


def test_grid_values_are_validated(tmp_path: Path) -> None:
    train = world_splits(tmp_path)["train"]
    with pytest.raises(ValueError, match="positive"):
        DownstreamTask(task="depth", train=train, test=train, lrs=(0.0,))
    with pytest.raises(ValueError, match="twice"):
        DownstreamTask(task="depth", train=train, test=train, steps=(10, 10))
    with pytest.raises(ValueError, match="val_fraction"):
        DownstreamTask(task="depth", train=train, test=train, val_fraction=1.0)
    with pytest.raises(ValueError, match="init_name"):
        TransferConfig(init_name="a/b")


def test_config_round_trips_through_yaml(tmp_path: Path) -> None:
    config = TransferConfig(init="x.pt", init_name="must", tasks=default_suite(tmp_path, None), mode="linear")
    config_lib.save(config, tmp_path / "config.yaml")
    assert config_lib.load(TransferConfig, tmp_path / "config.yaml") == config


def test_cell_engine_config_uses_the_cosine_schedule_to_zero(tmp_path: Path) -> None:
    train = world_splits(tmp_path)["train"]
    spec = DownstreamTask(task="depth", train=train, test=train, warmup_steps=50)
    engine = spec.train_config(lr=0.2, steps=10, seed=3, device="cpu", precision="fp32", progress=False)
    assert (engine.lr, engine.steps, engine.weight_decay, engine.seed) == (0.2, 10, 1e-4, 3)
    assert engine.warmup_steps == 9  # never longer than the run


def test_layer_decay_is_a_transfer_option_passed_to_every_cell(tmp_path: Path) -> None:
    train = world_splits(tmp_path)["train"]
    spec = config_lib.from_dict(DownstreamTask, {"task": "depth", "train": config_lib.to_dict(train),
                                                 "test": config_lib.to_dict(train), "layer_decay": 0.75})
    engine = spec.train_config(lr=0.2, steps=10, seed=3, device="cpu", precision="fp32", progress=False)
    assert engine.layer_decay == 0.75
    with pytest.raises(ValueError, match="layer_decay"):
        DownstreamTask(task="depth", train=train, test=train, layer_decay=1.5)
