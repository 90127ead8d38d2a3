"""``run_transfer`` end to end on a tiny world (MuST supp. sec. 2.3, SPEC M6 / D5): the checkpoint's
backbone + FPN are loaded and the heads are new, the linear probe leaves the trunk untouched,
grid.jsonl has every cell and best.json is the val argmax, reruns skip finished cells, an
interrupted cell resumes to the uninterrupted result, and Fashion-MNIST runs with K + 1 outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from must.config import ConfigError, replace
from must.data.readers import DatasetConfig
from must.models import build_model
from must.tasks import build_task
from must.transfer import run as run_module
from must.transfer.config import DownstreamTask, TransferConfig, world_splits
from must.transfer.grid import RECORD_FIELDS, grid_cells
from must.transfer.run import build_transfer_model, run_transfer, run_transfers

from .conftest import TINY_MODEL

WORLD_CLASSES = 12
FASHION_ROOT = Path("/usr/share/datasets/fashion-mnist")


def downstream(world_root: Path, task: str, **changes) -> DownstreamTask:
    splits = world_splits(world_root)
    options = dict(train=splits["train"], val=splits["val"], test=splits["test"], image_size=32,
                   lrs=(0.1,), steps=(6,), batch_size=8, eval_batch_size=8)
    options.update(changes)
    return DownstreamTask(task=task, **options)


def trunk_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state.items() if k.startswith(("backbone.", "fpn."))}


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint of ours whose every tensor differs from a fresh initialization, with a
    classification head of the very shape the transfer head has (so only "new heads" keeps it out)."""
    task = build_task("classification", num_classes=WORLD_CLASSES, background_class=True)
    model = build_model(TINY_MODEL, {task.name: task})
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.add_(0.02 * torch.rand_like(tensor))  # positive: BN variances stay valid
    path = tmp_path_factory.mktemp("pretrained") / "checkpoint.pt"
    torch.save({"model": model.state_dict(), "step": 1}, path)
    return path


def test_trunk_comes_from_the_checkpoint_and_heads_are_new(pretrained: Path) -> None:
    saved = torch.load(pretrained, weights_only=True)["model"]
    task = build_task("classification", num_classes=WORLD_CLASSES, background_class=True)
    config = TransferConfig(init=str(pretrained), init_name="supervised", model=TINY_MODEL)
    state = build_transfer_model(config, task).state_dict()
    assert all(torch.equal(state[k], v) for k, v in trunk_state(saved).items())
    head = "heads.classification.linear.weight"
    assert state[head].shape == saved[head].shape == (WORLD_CLASSES + 1, 64)  # K + 1 (background) x C5
    assert not torch.equal(state[head], saved[head])
    scratch = build_transfer_model(replace(config, init=None), task).state_dict()
    assert not torch.equal(scratch["backbone.conv1.weight"], saved["backbone.conv1.weight"])
    assert torch.equal(scratch[head], state[head])  # seeded: the same new head either way


def test_linear_probe_trains_only_the_head_and_finetune_everything(
        tmp_path: Path, world_root: Path, pretrained: Path) -> None:
    saved = torch.load(pretrained, weights_only=True)["model"]
    tasks = {"classification": downstream(world_root, "classification", steps=(8,),
                                          task_options={"background_class": True})}
    config = TransferConfig(init=str(pretrained), init_name="supervised", tasks=tasks, model=TINY_MODEL,
                            mode="linear", progress=False)
    initial_head = build_transfer_model(config, build_task(
        "classification", num_classes=WORLD_CLASSES, background_class=True)).state_dict()
    task_dir = tmp_path / "transfer" / "supervised" / "classification"
    results = {}
    for mode in ("linear", "finetune"):
        results[mode] = run_transfer(replace(config, mode=mode), tmp_path)["classification"]
        suffix = "-linear" if mode == "linear" else ""
        state = torch.load(task_dir / "cells" / f"lr0.1-steps8{suffix}" / "checkpoint.pt",
                           weights_only=True)["model"]
        trunk_equal = all(torch.equal(state[k], v) for k, v in trunk_state(saved).items())
        assert trunk_equal == (mode == "linear")
        head = "heads.classification.linear.weight"
        assert not torch.equal(state[head], initial_head[head])
    assert results["linear"]["mode"] == "linear" and results["finetune"]["mode"] == "finetune"
    assert json.loads((task_dir / "best_linear.json").read_text()) == results["linear"]
    assert json.loads((task_dir / "best.json").read_text()) == results["finetune"]
    modes = [json.loads(line)["mode"] for line in (task_dir / "grid.jsonl").read_text().splitlines()]
    assert modes == ["linear", "finetune"]


def test_grid_has_every_cell_best_is_val_argmax_and_rerun_skips(
        tmp_path: Path, world_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tasks = {"depth": downstream(world_root, "depth", lrs=(0.02, 0.2), steps=(3, 6))}
    config = TransferConfig(init=None, init_name="scratch", tasks=tasks, model=TINY_MODEL, progress=False)
    best = run_transfer(config, tmp_path)["depth"]
    task_dir = tmp_path / "transfer" / "scratch" / "depth"
    lines = [json.loads(line) for line in (task_dir / "grid.jsonl").read_text().splitlines()]
    assert [(line["lr"], line["steps"]) for line in lines] == [(0.02, 3), (0.02, 6), (0.2, 3), (0.2, 6)]
    for line in lines:
        assert list(line)[:len(RECORD_FIELDS)] == list(RECORD_FIELDS)
        assert line["init"] == "scratch" and line["metric"] == "delta1" and line["mode"] == "finetune"
        assert 0.0 <= line["val_value"] <= 1.0 and 0.0 <= line["value"] <= 1.0
    assert len({line["val_value"] for line in lines}) > 1  # the cells really differ
    assert best == max(lines, key=lambda line: line["val_value"])
    assert json.loads((task_dir / "best.json").read_text()) == best

    results = sorted((task_dir / "cells").glob("*/result.json"))
    stamps = [path.stat().st_mtime_ns for path in results]

    def no_training(*args, **kwargs):
        raise AssertionError("a finished cell was trained again")

    monkeypatch.setattr(run_module, "fit", no_training)
    assert run_transfer(config, tmp_path)["depth"] == best
    assert [path.stat().st_mtime_ns for path in results] == stamps
    wider = replace(config, model=replace(TINY_MODEL, fpn_channels=8))
    with pytest.raises(ConfigError, match="another config"):
        run_transfer(wider, tmp_path)


def test_several_inits_share_one_pool_and_match_separate_runs(
        tmp_path: Path, world_root: Path, pretrained: Path) -> None:
    tasks = {"depth": downstream(world_root, "depth", lrs=(0.05,), steps=(4,)),
             "segmentation": downstream(world_root, "segmentation", lrs=(0.05,), steps=(3,))}
    configs = [TransferConfig(init=init, init_name=name, tasks=tasks, model=TINY_MODEL, progress=False,
                              workers=2) for name, init in (("scratch", None), ("supervised", str(pretrained)))]
    pooled = run_transfers(configs, tmp_path / "pooled")
    alone = {config.init_name: run_transfer(replace(config, workers=1), tmp_path / config.init_name)
             for config in configs}
    assert set(pooled) == {"scratch", "supervised"}
    for name, bests in pooled.items():
        assert set(bests) == set(tasks)
        for task, best in bests.items():
            assert best["init"] == name and best["task"] == task
            assert best["value"] == alone[name][task]["value"]  # same cell, same result, any process
            assert (tmp_path / "pooled" / "transfer" / name / task / "best.json").is_file()
    assert pooled["scratch"]["depth"]["value"] != pooled["supervised"]["depth"]["value"]
    with pytest.raises(ConfigError, match="must differ"):
        run_transfers([configs[0], configs[0]], tmp_path / "twice")


def test_interrupted_cell_resumes_to_the_uninterrupted_result(
        tmp_path: Path, world_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tasks = {"normals": downstream(world_root, "normals", steps=(6,), checkpoint_every=2)}
    config = TransferConfig(tasks=tasks, model=TINY_MODEL, progress=False)
    reference = run_transfer(config, tmp_path / "whole")["normals"]

    real_loader = run_module.make_loader

    def interrupted_loader(*args, **kwargs):
        for count, batch in enumerate(real_loader(*args, **kwargs)):
            if count == 5:  # during step 5: the checkpoint of step 4 is on disk
                raise KeyboardInterrupt
            yield batch

    monkeypatch.setattr(run_module, "make_loader", interrupted_loader)
    with pytest.raises(KeyboardInterrupt):
        run_transfer(config, tmp_path / "cut")
    cell = tmp_path / "cut" / "transfer" / "scratch" / "normals" / "cells" / "lr0.1-steps6"
    assert torch.load(cell / "checkpoint.pt", weights_only=True)["step"] == 4
    assert not (cell / "result.json").exists()
    monkeypatch.setattr(run_module, "make_loader", real_loader)
    resumed = run_transfer(config, tmp_path / "cut")["normals"]
    assert (resumed["val_value"], resumed["value"]) == (reference["val_value"], reference["value"])


@pytest.mark.skipif(not FASHION_ROOT.is_dir(), reason="Fashion-MNIST is not installed")
def test_tiny_fashion_mnist_run_writes_best(tmp_path: Path) -> None:
    root = str(FASHION_ROOT)
    task = DownstreamTask(
        task="classification", train=DatasetConfig(format="fashion_mnist", root=root, limit=200),
        test=DatasetConfig(format="fashion_mnist", root=root, split="test", limit=64),
        val_fraction=0.2, task_options={"background_class": True}, image_size=32,
        scale_range=(1.0, 1.0), lrs=(0.1,), steps=(10,), batch_size=16)
    config = TransferConfig(tasks={"classification": task}, model=TINY_MODEL, progress=False)
    best = run_transfer(config, tmp_path)["classification"]
    task_dir = tmp_path / "transfer" / "scratch" / "classification"
    assert json.loads((task_dir / "best.json").read_text()) == best
    assert best["metric"] == "top1" and 0.0 <= best["value"] <= 1.0
    state = torch.load(task_dir / "cells" / "lr0.1-steps10" / "checkpoint.pt", weights_only=True)["model"]
    assert state["heads.classification.linear.weight"].shape[0] == 11  # 10 classes + background


def test_missing_fashion_mnist_is_warned_and_recorded(
        tmp_path: Path, world_root: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Without Fashion-MNIST the classification column silently measured the world's classes; now
    stderr says so and every result, up to the report's ``results.json``, records the stand-in."""
    from must.cli import main
    from must.report.results import collect_results
    from must.transfer import cli as transfer_cli

    missing = tmp_path / "no_fashion_mnist"
    monkeypatch.setattr(transfer_cli, "FASHION_MNIST_ROOT", str(missing))
    out = tmp_path / "run"
    assert main(["transfer", "--init", "none", "--out", str(out), "--world", str(world_root),
                 "--tasks", "classification", "progress=false", "tasks.classification.steps=[2]",
                 "tasks.classification.image_size=32", "tasks.classification.batch_size=8"]) == 0
    error = capsys.readouterr().err
    assert f"Fashion-MNIST not found at {missing}" in error and "world's image classes" in error
    best = json.loads((out / "transfer" / "scratch" / "classification" / "best.json").read_text())
    assert (best["dataset"], best["substitutes"]) == ("world", "fashion_mnist")
    results = collect_results(out)
    entry = results["transfer"]["scratch"]["classification"]
    assert (entry["dataset"], entry["substitutes"]) == ("world", "fashion_mnist")
    assert "transfer column 'classification': world data stands in for fashion_mnist" in results["notes"]


def test_more_train_sets_are_read_as_one_with_train(
        tmp_path: Path, world_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Supp. sec. 2.3 trains PASCAL detection on VOC 2007 + 2012 trainval: ``more_train`` adds
    training sets beside ``train`` (the val hold-out comes from ``train`` only)."""
    splits = world_splits(world_root)
    spec = downstream(world_root, "detection", val=None, val_fraction=0.25, more_train=(splits["val"],),
                      steps=(2,))
    train_sets, val, _ = run_module.open_splits(spec, seed=0)
    assert [len(dataset) for dataset in train_sets] == [12, 8] and len(val) == 4
    seen: list[int] = []
    real_loader = run_module.make_loader

    def recording_loader(datasets, *args, **kwargs):
        seen.extend(len(dataset) for dataset in datasets)
        return real_loader(datasets, *args, **kwargs)

    monkeypatch.setattr(run_module, "make_loader", recording_loader)
    run_transfer(TransferConfig(tasks={"detection": spec}, model=TINY_MODEL, progress=False), tmp_path)
    assert seen == [12, 8]


# The input transform (Doersch & Zisserman 2017 sec. 4.3): a harmonized pre-training is
# fine-tuned on the lightness images it learned from.

@pytest.fixture(scope="module")
def harmonized(pretrained: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same weights, recorded as trained on harmonized inputs (what the engine writes)."""
    state = torch.load(pretrained, weights_only=True)
    path = tmp_path_factory.mktemp("harmonized") / "checkpoint.pt"
    torch.save({**state, "model_record": {"input_transform": "harmonized"}}, path)
    return path


def trunk_inputs(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """What the backbone receives (normalized) when ``model`` runs on ``images``."""
    seen = []
    handle = model.backbone.register_forward_pre_hook(lambda module, inputs: seen.append(inputs[0]))
    model.eval()(images)
    handle.remove()
    return seen[0]


def is_gray(inputs: torch.Tensor) -> bool:
    # TINY_MODEL normalizes each channel by its own mean / std: undo it before comparing channels
    unit = inputs * torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1) + torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    return bool(torch.allclose(unit[:, 0], unit[:, 1], atol=1e-5) and torch.allclose(unit[:, 1], unit[:, 2], atol=1e-5))


@pytest.mark.parametrize("init, setting, expected", [
    ("harmonized", "auto", "harmonized"), ("harmonized", "rgb", "rgb"),
    ("pretrained", "auto", "rgb"), ("pretrained", "harmonized", "harmonized"), (None, "auto", "rgb")])
def test_the_trunk_is_fed_the_recorded_or_configured_input_transform(
        request: pytest.FixtureRequest, init: str | None, setting: str, expected: str) -> None:
    path = None if init is None else str(request.getfixturevalue(init))
    config = TransferConfig(init=path, model=TINY_MODEL, input_transform=setting)
    assert run_module.resolve_input_transform(config) == expected
    task = build_task("classification", num_classes=WORLD_CLASSES, background_class=True)
    model = build_transfer_model(config, task)
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    assert is_gray(trunk_inputs(model, images)) == (expected == "harmonized")
    assert model.record()["input_transform"] == expected
    # cells of RGB transfers keep the identity they had before the transform was recorded
    resolved = replace(config, input_transform=expected, tasks={"depth": DownstreamTask(
        task="depth", train=DatasetConfig(format="world", root="w"), test=DatasetConfig(format="world", root="w"))})
    identity = run_module.cell_identity(resolved, grid_cells("depth", (0.1,), (2,), "finetune")[0], None)
    assert ("input_transform" in identity) == (expected != "rgb")


def test_a_harmonized_transfer_trains_on_lightness_and_records_it(
        tmp_path: Path, world_root: Path, harmonized: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[torch.Tensor] = []

    def watched(config: TransferConfig, task) -> torch.nn.Module:
        model = build_transfer_model(config, task)
        model.backbone.register_forward_pre_hook(lambda module, inputs: seen.append(inputs[0].detach()))
        return model

    monkeypatch.setattr(run_module, "build_transfer_model", watched)
    tasks = {"depth": downstream(world_root, "depth", steps=(2,))}
    config = TransferConfig(init=str(harmonized), init_name="doersch", tasks=tasks, model=TINY_MODEL,
                            progress=False)
    run_transfer(config, tmp_path)
    assert seen and all(is_gray(inputs) for inputs in seen)  # training and evaluation batches
    root = tmp_path / "transfer" / "doersch"
    assert "input_transform: harmonized" in (root / "config_finetune.yaml").read_text()
    (cell,) = (root / "depth" / "cells").glob("*/cell.json")
    assert json.loads(cell.read_text())["input_transform"] == "harmonized"
    (checkpoint,) = (root / "depth" / "cells").glob("*/checkpoint.pt")
    assert torch.load(checkpoint, weights_only=True)["model_record"]["input_transform"] == "harmonized"
    forced = replace(config, input_transform="rgb")
    with pytest.raises(ConfigError, match="another config"):  # another transform, another cell
        run_transfer(forced, tmp_path)
