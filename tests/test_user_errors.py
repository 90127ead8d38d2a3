"""Every error a user can cause ends a command in one line (``must VERB: error: ...``, exit code 2),
never in a traceback: a bad config value, a task option the model or the data does not fit,
a weighting without its inputs, data without the run's labels, pseudo labels of another class
count, a backbone and norm that do not go together. Each case runs the real verb in-process."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

import must
from must.cli import main
from must.files import CHECKPOINT_NAME
from must.label.teachers import TeacherRecord, save_record
from must.models import ModelConfig, build_model
from must.tasks import build_task
from must.world import CATEGORIES, generate

TINY = ModelConfig(backbone="resnet18", width=0.125, fpn_channels=16)
ONE_STEP = ["train.steps=1", "train.batch_size=4", "train.progress=false"]
TWO_CLASSES = ["task_options.num_classes=2", "task_options.class_names=[a,b]"]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The world's transfer domain (every task labeled), 4 images per split at 32 px."""
    root = tmp_path_factory.mktemp("user_errors_world")
    for seed, split in enumerate(("train", "val", "test")):
        generate("transfer", root / split, count=4, size=32, seed=seed, progress=False)
    return root


@pytest.fixture(scope="module")
def labeled(world: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(a random-weight classification teacher, its ``must label`` output on ``world/train``'s
    images read as an unlabeled folder)."""
    root = tmp_path_factory.mktemp("user_errors_teacher")
    options = {"num_classes": len(CATEGORIES), "class_names": list(CATEGORIES)}
    task = build_task("classification", **options)
    torch.save({"model": build_model(TINY, {task.name: task}).state_dict()}, root / CHECKPOINT_NAME)
    save_record(TeacherRecord(task="classification", task_options=options, model=TINY, image_size=32,
                              batch_size=16, learning_rate=0.05), root)
    pseudo = root.parent / "pseudo"
    assert main(["label", "--teacher", str(root), "--data", f"folder:{world / 'train' / 'images'}",
                 "--out", str(pseudo)]) == 0
    return root, pseudo


def bad_runs(world: Path, out: Path, labeled: tuple[Path, Path] | None) -> dict[str, list[str]]:
    data = f"world:{world / 'train'}"
    runs = {
        "transfer: a grid value given twice": [
            "transfer", "--init", "none", "--out", str(out), "--world", str(world),
            "--tasks", "classification", "--lrs", "0.1,0.1"],
        "train: the MuST rule without a teacher's recipe": [
            "train", "--data", data, "--out", str(out), "tasks.classification.num_classes=12", *ONE_STEP],
        "train: data without a label of any task": [
            "train", "--data", f"folder:{world / 'train' / 'images'}", "--out", str(out),
            "tasks.classification.num_classes=3", "train.weighting.method=equal", *ONE_STEP],
        "teach: detection levels the pyramid lacks": [
            "teach", "--task", "detection", "--data", data, "--out", str(out), "task_options.levels=[p9]",
            *ONE_STEP],
        "teach: fewer classes than the data": [
            "teach", "--task", "classification", "--data", data, "--out", str(out), *TWO_CLASSES, *ONE_STEP],
        "teach: fewer classes than the data, met in a loader process": [
            "teach", "--task", "classification", "--data", data, "--out", str(out), *TWO_CLASSES, *ONE_STEP,
            "train.workers=1"],
        "pretrain: a ViT backbone with frozen batch norm": [
            "pretrain", "--method", "rotation", "--data", data, "--out", str(out),
            "model.backbone=timm:vit_tiny_patch16_224", "model.norm=frozen_batch", *ONE_STEP],
        "pretrain: MAE without a ViT backbone": [
            "pretrain", "--method", "mae", "--data", data, "--out", str(out), "model.backbone=resnet18", *ONE_STEP],
    }
    if labeled is not None:
        teacher, pseudo = labeled
        runs["train: pseudo labels of another class count"] = [
            "train", "--teacher", str(teacher), "--data", f"folder:{world / 'train' / 'images'}",
            "--pseudo", str(pseudo), "--out", str(out),
            "tasks.classification.num_classes=2", "tasks.classification.class_names=[a,b]",
            "train.weighting.method=equal", *ONE_STEP]
    return runs


EXPECTED = {
    "transfer: a grid value given twice": "grid values listed twice: lrs (0.1, 0.1)",
    "train: the MuST rule without a teacher's recipe": "set weighting.teachers.classification.batch_size",
    "train: data without a label of any task": "has no target for any of the tasks ['classification']",
    "teach: detection levels the pyramid lacks": "detection option levels: ['p9'] not in the model's pyramid",
    "teach: fewer classes than the data": "outside [0, 2): the data has more classes than the option "
                                          "num_classes=2",
    "teach: fewer classes than the data, met in a loader process": "outside [0, 2): the data has more classes",
    "pretrain: a ViT backbone with frozen batch norm": "model.norm=frozen_batch: backbone "
                                                       "'timm:vit_tiny_patch16_224' is a ViT",
    "pretrain: MAE without a ViT backbone": "mae needs a ViT backbone (a timm VisionTransformer), got "
                                            "'resnet18'; set model.backbone=timm:vit_tiny_patch16_224",
    "train: pseudo labels of another class count": "expected (2,): pseudo labels of another class count",
}


@pytest.mark.parametrize("case", list(EXPECTED))
def test_a_user_error_ends_in_one_line(case: str, world: Path, tmp_path: Path,
                                       request: pytest.FixtureRequest,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    labeled = request.getfixturevalue("labeled") if "pseudo" in case else None
    argv = bad_runs(world, tmp_path / "out", labeled)[case]
    capsys.readouterr()
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert "Traceback" not in error, error
    assert error.count("\n") == 1 and error.startswith(f"must {argv[0]}: error: "), error
    assert EXPECTED[case] in error, error


def test_config_checks_refuse_with_config_errors() -> None:
    """The rule of :mod:`must.config`: a config's ``__post_init__`` refuses a value with a
    ``ConfigError`` itself (a plain ``ValueError`` from a config built in code, e.g. by
    ``replace``, would end in a traceback)."""
    refusals = []
    for path in sorted(Path(must.__file__).parent.rglob("*.py")):
        for function in ast.walk(ast.parse(path.read_text())):
            if isinstance(function, ast.FunctionDef) and function.name == "__post_init__":
                refusals += [(path.name, node.lineno, ast.unparse(node.exc)) for node in ast.walk(function)
                             if isinstance(node, ast.Raise) and node.exc is not None]
    assert refusals, "no config checks found"
    assert [refusal for refusal in refusals if ".ConfigError(" not in f".{refusal[2]}"] == []
