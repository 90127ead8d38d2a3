"""``must.load(path).predict(...)``: every input form, every task at the source size, and the one
loader rebuilding teachers, students, transfer cells and checkpoints."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import must
from must.config import ConfigError
from must.models import CheckpointError
from must.models.loading import load_model

from .conftest import PHOTO_SIZES, SIZE, TASK_OPTIONS


def shapes_match(prediction: dict, height: int, width: int) -> None:
    assert set(prediction) == set(TASK_OPTIONS)
    assert prediction["classification"].shape == (TASK_OPTIONS["classification"]["num_classes"],)
    assert torch.isclose(prediction["classification"].sum(), torch.tensor(1.0))
    assert prediction["segmentation"].shape == (height, width)
    assert prediction["segmentation"].dtype == torch.int64
    assert prediction["depth"].shape == (height, width)
    assert prediction["normals"].shape == (3, height, width)
    assert torch.allclose(prediction["normals"].norm(dim=0), torch.ones(height, width), atol=1e-4)
    boxes = prediction["detection"]["boxes"]
    assert len(boxes) > 0
    assert (boxes[:, [0, 2]] <= width).all() and (boxes[:, [1, 3]] <= height).all() and (boxes >= 0).all()


def test_predict_on_paths_pil_arrays_and_tensors_at_source_size(student: Path, photos: Path) -> None:
    model = must.load(student)
    paths = sorted(photos.rglob("*.*"))
    by_path = model.predict(paths, batch_size=3)
    assert len(by_path) == len(PHOTO_SIZES)
    for path, prediction in zip(paths, by_path):
        height, width = PHOTO_SIZES[str(path.relative_to(photos).with_suffix(""))]
        shapes_match(prediction, height, width)
    arrays = [np.array(Image.open(path).convert("RGB")) for path in paths]
    for inputs in ([Image.open(path) for path in paths], arrays):
        for first, second in zip(by_path, model.predict(inputs)):
            # same pixels; another batch size may change the last float bits
            assert torch.allclose(first["depth"], second["depth"], atol=1e-5)
            assert torch.allclose(first["classification"], second["classification"], atol=1e-5)
    wide = torch.from_numpy(arrays[paths.index(photos / "a" / "wide.png")]).permute(2, 0, 1)
    batch = torch.stack([wide, wide.flip(-1)]).float() / 255.0
    as_batch = model.predict(batch)
    assert len(as_batch) == 2
    shapes_match(as_batch[0], 40, 72)
    single = model.predict(str(photos / "a" / "wide.png"))[0]
    assert torch.allclose(as_batch[0]["depth"], single["depth"], atol=1e-2)


def test_task_subset_and_unknown_task(student: Path, photos: Path) -> None:
    model = must.load(student, tasks=["depth"])
    assert list(model.predict(photos / "square.png")[0]) == ["depth"]
    with pytest.raises(ConfigError, match="no task\\(s\\) \\['colour'\\].*classification"):
        must.load(student, tasks=["colour"])


def test_bad_inputs_are_clear_errors(student: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nowhere"):
        must.load(tmp_path / "nowhere")
    with pytest.raises(CheckpointError, match="no model record"):
        must.load(tmp_path)
    with pytest.raises(ConfigError, match="uint8 \\[H, W, 3\\]"):
        must.load(student).predict(np.zeros((8, 8, 3), dtype=np.float32))


def test_loader_rebuilds_teacher_transfer_cell_and_checkpoint(student: Path, tmp_path: Path) -> None:
    checkpoint = student / "checkpoint.pt"
    teacher = tmp_path / "as_teacher" / "segmentation"
    teacher.mkdir(parents=True)
    (teacher / "teacher.json").write_text(json.dumps({
        "task": "segmentation", "task_options": TASK_OPTIONS["segmentation"], "image_size": SIZE,
        "model": {"backbone": "resnet18", "width": 0.125, "fpn_channels": 16},
        "checkpoint": str(checkpoint)}))
    loaded = load_model(teacher)
    assert (loaded.kind, list(loaded.tasks)) == ("teacher", ["segmentation"])
    cell = tmp_path / "cell"
    cell.mkdir()
    shutil.copy(checkpoint, cell / "checkpoint.pt")
    (cell / "cell.json").write_text(json.dumps({
        "task": "detection", "downstream": {"task_options": {}, "image_size": 24},
        "model": {"backbone": "resnet18", "width": 0.125, "fpn_channels": 16}}))
    loaded = load_model(cell / "checkpoint.pt")  # the class count is read from the head
    assert loaded.kind == "transfer" and loaded.image_size == 24
    assert loaded.tasks["detection"].num_classes == TASK_OPTIONS["detection"]["num_classes"]
    whole = load_model(checkpoint)
    state = torch.load(checkpoint, weights_only=True)["model"]
    assert all(torch.equal(value, state[key]) for key, value in whole.model.state_dict().items())


def test_a_record_that_does_not_fit_the_checkpoint_is_refused(student: Path, tmp_path: Path) -> None:
    shutil.copy(student / "checkpoint.pt", tmp_path / "checkpoint.pt")
    record = json.loads((student / "student.json").read_text())
    record["tasks"]["segmentation"] = {"num_classes": 4}
    (tmp_path / "student.json").write_text(json.dumps(record))
    with pytest.raises(CheckpointError, match="heads.segmentation"):
        load_model(tmp_path)
