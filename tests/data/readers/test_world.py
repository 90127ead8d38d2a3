"""The world reader on a hand-built three-image world directory (the generator's layout)."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from must.config import from_dict
from must.data.readers import DataError, DataWarning, DatasetConfig, WorldDataset, open_dataset

H, W = 6, 8
IMAGES = {"w0": "sphere", "w1": "cube", "w2": "cube"}


def tiny_world(root: Path) -> Path:
    for sub in ("annotations", "masks", "depth", "normals", "instances"):
        (root / sub).mkdir(parents=True)
    (root / "world.json").write_text(json.dumps({
        "categories": ["sphere", "cube"], "segmentation_classes": ["floor", "wall", "sphere", "cube"],
        "seed": 3}))
    for index, (key, category) in enumerate(IMAGES.items()):
        (root / "images" / category).mkdir(parents=True, exist_ok=True)
        pixels = np.full((H, W, 3), 40 * index, np.uint8)
        Image.fromarray(pixels).save(root / "images" / category / f"{key}.png")
    (root / "annotations" / "instances.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "images/sphere/w0.png", "height": H, "width": W},
                   {"id": 2, "file_name": "images/cube/w1.png", "height": H, "width": W}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 3, 2], "iscrowd": 0},
                        {"id": 2, "image_id": 2, "category_id": 2, "bbox": [0, 0, 8, 6], "iscrowd": 0}],
        "categories": [{"id": 1, "name": "sphere"}, {"id": 2, "name": "cube"}]}))
    mask = np.zeros((H, W), np.uint8)
    mask[1:3, 1:4] = 2
    mask[0, :] = 255
    Image.fromarray(mask).save(root / "masks" / "w0.png")
    for key, millimetres in (("w0", 1500), ("w1", 3000)):
        Image.fromarray(np.full((H, W), millimetres, np.uint16)).save(root / "depth" / f"{key}.png")
    np.save(root / "normals" / "w0.npy", np.tile(np.float16([0, -1, 0]), (H, W, 1)))
    Image.fromarray(np.full((H, W), 513, np.uint16)).save(root / "instances" / "w0.png")
    return root


def test_every_task_joined_by_key(tmp_path: Path) -> None:
    dataset = WorldDataset(tiny_world(tmp_path))
    assert dataset.tasks == ("classification", "detection", "segmentation", "depth", "normals",
                             "instances")
    assert dataset.keys == ["w0", "w1", "w2"]  # key order, not folder order
    # Classification follows world.json's order (sphere = 0), not sorted folder names.
    assert dataset.classes["classification"] == ["sphere", "cube"]
    assert dataset.classes["segmentation"] == ["floor", "wall", "sphere", "cube"]
    samples = {dataset.keys[i]: dataset[i] for i in range(len(dataset))}
    w0, w1, w2 = samples["w0"], samples["w1"], samples["w2"]
    assert set(w0.targets) == set(dataset.tasks)
    assert set(w1.targets) == {"classification", "detection", "depth"}
    assert set(w2.targets) == {"classification"}
    assert int(w0.targets["classification"]) == 0 and int(w1.targets["classification"]) == 1
    assert w0.targets["detection"]["boxes"].tolist() == [[1, 1, 4, 3]]
    assert w1.targets["detection"]["labels"].tolist() == [1]
    assert w0.targets["segmentation"][1, 1] == 2 and w0.targets["segmentation"][0, 0] == 255
    assert float(w1.targets["depth"][0, 0]) == pytest.approx(3.0)
    assert w0.targets["normals"].dtype == torch.float32
    assert w0.targets["normals"][:, 2, 2].tolist() == [0, -1, 0]
    assert w0.targets["instances"].dtype == torch.int64 and int(w0.targets["instances"][0, 0]) == 513
    assert w2.image.shape == (3, H, W) and int(w2.image[0, 0, 0]) == 80


def test_chosen_tasks_only(tmp_path: Path) -> None:
    config = from_dict(DatasetConfig, {"format": "world", "root": str(tiny_world(tmp_path)),
                                       "tasks": ["classification", "depth"]})
    dataset = open_dataset(config)
    assert dataset.tasks == ("classification", "depth") and len(dataset) == 3
    assert all(set(dataset[i].targets) <= {"classification", "depth"} for i in range(3))
    depth_only = WorldDataset(tmp_path, ("depth",))
    assert depth_only.keys == ["w0", "w1"]  # images with at least one chosen target
    assert WorldDataset(tmp_path, limit=2).keys == ["w0", "w1"]


def test_missing_task_folder(tmp_path: Path) -> None:
    tiny_world(tmp_path)
    for path in (tmp_path / "instances").iterdir():
        path.unlink()
    (tmp_path / "instances").rmdir()
    with pytest.raises(DataError, match="instances.*this world has: classification"):
        WorldDataset(tmp_path, ("instances",))
    assert "instances" not in WorldDataset(tmp_path).tasks


@pytest.mark.parametrize("case", ["mask_size", "missing_image", "unknown_category_folder"])
def test_bad_world_input(tmp_path: Path, case: str) -> None:
    tiny_world(tmp_path)
    if case == "mask_size":
        bad = tmp_path / "masks" / "w0.png"
        Image.fromarray(np.zeros((H + 1, W), np.uint8)).save(bad)
    elif case == "missing_image":
        bad = tmp_path / "images" / "cube" / "w1.png"
        bad.unlink()
        bad = tmp_path / "annotations" / "instances.json"  # names an image that is gone
    else:
        bad = tmp_path / "images" / "torus"
        bad.mkdir()
    with pytest.raises(DataError, match=bad.name):
        WorldDataset(tmp_path)
    with pytest.warns(DataWarning):
        dataset = WorldDataset(tmp_path, skip_bad=True)
    assert bad.name in dataset.skipped[0][0]
    assert len(dataset) == (3 if case == "unknown_category_folder" else 2)


def test_mask_value_beyond_the_class_list(tmp_path: Path) -> None:
    tiny_world(tmp_path)
    Image.fromarray(np.full((H, W), 9, np.uint8)).save(tmp_path / "masks" / "w0.png")
    dataset = WorldDataset(tmp_path, ("segmentation",))
    with pytest.raises(DataError, match="w0.png.*\\[9\\]"):
        dataset[0]


def test_survives_pickling_for_loader_workers(tmp_path: Path) -> None:
    import pickle

    dataset = WorldDataset(tiny_world(tmp_path))
    copy = pickle.loads(pickle.dumps(dataset))
    assert copy.keys == dataset.keys
    assert torch.equal(copy[0].targets["segmentation"], dataset[0].targets["segmentation"])
