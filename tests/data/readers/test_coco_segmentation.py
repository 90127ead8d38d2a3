"""COCO panoptic and COCO-Stuff read as semantic segmentation."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from must.data.readers import (CocoPanopticSemantic, DataError, DataWarning, DatasetConfig,
                               open_dataset)
from must.data.sample import IGNORE_INDEX

CATEGORIES = [{"id": 150, "name": "wall", "isthing": 0}, {"id": 7, "name": "train", "isthing": 1},
              {"id": 20, "name": "sheep", "isthing": 1}]
SEGMENT_IDS = np.array([[0, 3, 3, 300, 300],
                        [0, 3, 3, 300, 70000],
                        [5, 5, 5, 5, 70000],
                        [5, 5, 5, 5, 0]])
SEGMENTS = [{"id": 3, "category_id": 20, "iscrowd": 0}, {"id": 300, "category_id": 7, "iscrowd": 0},
            {"id": 70000, "category_id": 20, "iscrowd": 1}, {"id": 5, "category_id": 150, "iscrowd": 0}]


def encode(ids: np.ndarray) -> np.ndarray:
    """Segment id -> RGB, the COCO panoptic PNG encoding (id = R + 256 G + 256^2 B)."""
    return np.stack([ids % 256, ids // 256 % 256, ids // 256**2], axis=-1).astype(np.uint8)


def tiny_panoptic(root: Path) -> Path:
    (root / "val2017").mkdir(parents=True)
    (root / "annotations" / "panoptic_val2017").mkdir(parents=True)
    Image.fromarray(np.zeros((4, 5, 3), np.uint8)).save(root / "val2017" / "a.jpg")
    Image.fromarray(encode(SEGMENT_IDS)).save(root / "annotations" / "panoptic_val2017" / "a.png")
    path = root / "annotations" / "panoptic_val2017.json"
    path.write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a.jpg", "height": 4, "width": 5}],
        "annotations": [{"image_id": 1, "file_name": "a.png", "segments_info": SEGMENTS}],
        "categories": CATEGORIES}))
    return path


def test_panoptic_as_semantic(tmp_path: Path) -> None:
    tiny_panoptic(tmp_path)
    dataset = open_dataset(DatasetConfig("coco_panoptic", str(tmp_path), split="val"))
    assert dataset.classes["segmentation"] == ["train", "sheep", "wall"]  # sorted ids 7, 20, 150
    target = dataset[0].targets["segmentation"]
    contiguous = {7: 0, 20: 1, 150: 2}
    category = {s["id"]: s["category_id"] for s in SEGMENTS}
    expected = [[IGNORE_INDEX if v == 0 else contiguous[category[v]] for v in row]
                for row in SEGMENT_IDS.tolist()]
    assert target.dtype == torch.int64 and target.tolist() == expected


@pytest.mark.parametrize("case", ["category", "missing_png", "size", "unlisted_segment"])
def test_panoptic_bad_input(tmp_path: Path, case: str) -> None:
    path = tiny_panoptic(tmp_path)
    data = json.loads(path.read_text())
    png = tmp_path / "annotations" / "panoptic_val2017" / "a.png"
    if case == "category":
        data["annotations"][0]["segments_info"][0]["category_id"] = 999
    elif case == "missing_png":
        png.unlink()
    elif case == "size":
        Image.fromarray(encode(SEGMENT_IDS[:3])).save(png)
    else:
        data["annotations"][0]["segments_info"].pop(0)
    path.write_text(json.dumps(data))
    if case == "unlisted_segment":  # seen only when the PNG is decoded
        dataset = CocoPanopticSemantic(path, tmp_path / "val2017")
        with pytest.raises(DataError, match="a.png.*segment ids \\[3\\]"):
            dataset[0]
        return
    with pytest.raises(DataError, match="a.png"):
        CocoPanopticSemantic(path, tmp_path / "val2017")
    with pytest.warns(DataWarning, match="skipped 1"):
        dataset = CocoPanopticSemantic(path, tmp_path / "val2017", skip_bad=True)
    assert len(dataset) == 0 and dataset.skipped[0][0] == str(png)


def tiny_stuff(root: Path) -> Path:
    """One image with a stuffthingmaps PNG (value = category id - 1) and the two JSONs."""
    (root / "val2017").mkdir(parents=True)
    masks = root / "stuffthingmaps_trainval2017" / "val2017"
    masks.mkdir(parents=True)
    (root / "annotations").mkdir()
    Image.fromarray(np.zeros((2, 3, 3), np.uint8)).save(root / "val2017" / "b.jpg")
    Image.fromarray(np.array([[0, 2, 91], [182, 255, 0]], np.uint8)).save(masks / "b.png")
    for kind, categories in (("instances", [(1, "person"), (3, "car")]),
                             ("stuff", [(92, "banner"), (183, "other")])):
        (root / "annotations" / f"{kind}_val2017.json").write_text(json.dumps(
            {"categories": [{"id": i, "name": n} for i, n in categories]}))
    return masks / "b.png"


def test_stuff_maps(tmp_path: Path) -> None:
    tiny_stuff(tmp_path)
    dataset = open_dataset(DatasetConfig("coco_stuff", str(tmp_path), split="val"))
    assert dataset.classes["segmentation"] == ["person", "car", "banner", "other"]
    assert dataset.keys == ["b"]
    assert dataset[0].targets["segmentation"].tolist() == [[0, 1, 2], [3, IGNORE_INDEX, 0]]


def test_stuff_bad_input(tmp_path: Path) -> None:
    mask = tiny_stuff(tmp_path)
    config = DatasetConfig("coco_stuff", str(tmp_path), split="val")
    Image.fromarray(np.array([[5, 0, 0], [0, 0, 0]], np.uint8)).save(mask)  # id 6: no category
    with pytest.raises(DataError, match="b.png.*\\[5\\]"):
        open_dataset(config)[0]
    Image.fromarray(np.zeros((3, 3), np.uint8)).save(mask)
    with pytest.raises(DataError, match="b.png.*3x3"):
        open_dataset(config)
    Image.fromarray(np.zeros((2, 3), np.uint8)).save(mask.with_name("orphan.png"))
    with pytest.warns(DataWarning, match="skipped 2"):
        dataset = open_dataset(DatasetConfig("coco_stuff", str(tmp_path), split="val",
                                             skip_bad=True))
    assert sorted(Path(p).name for p, _ in dataset.skipped) == ["b.png", "orphan.png"]
