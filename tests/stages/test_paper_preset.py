"""`must demo --preset paper` end to end on miniature datasets in the paper's own formats.

The preset is for GPU clusters with ImageNet, Objects365, COCO panoptic, MiDaS, CIFAR-100, PASCAL
VOC, NYU and DIODE on disk. Here every one of those formats gets a few random images with labels,
the roots are pointed at them and the sizes shrunk (ResNet-18/4, 64 px, 2 steps a stage); every
other setting is the preset's. The run must reach the report with a number in every table cell.
"""

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from must.data.readers.voc import VOC_CLASSES
from must.stages.demo import run_demo

SIZE = (40, 48)  # height, width of every image
RNG = np.random.default_rng(0)


def image(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(RNG.integers(0, 256, (*SIZE, 3), dtype=np.uint8)).save(path)


def write_json(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def imagenet(root: Path, count: int = 4) -> None:
    """ImageNet's train/ and val/ class folders."""
    for split in ("train", "val"):
        for label in ("n01440764", "n01443537"):
            for index in range(count):
                image(root / split / label / f"{label}_{index}.png")


def coco_detection(root: Path, count: int = 6) -> None:
    """Objects365 in COCO JSON: ``<split>2017/`` images, ``annotations/instances_<split>2017.json``."""
    for split in ("train", "val"):
        images, annotations = [], []
        for index in range(count):
            name = f"{index:012d}.png"
            image(root / f"{split}2017" / name)
            images.append({"id": index, "file_name": name, "height": SIZE[0], "width": SIZE[1]})
            annotations.append({"id": index, "image_id": index, "category_id": 1 + index % 3,
                                "bbox": [4.0, 6.0, 20.0, 16.0], "area": 320.0, "iscrowd": 0})
        write_json(root / "annotations" / f"instances_{split}2017.json", {
            "images": images, "annotations": annotations,
            "categories": [{"id": i, "name": f"class{i}"} for i in (1, 2, 3)]})


def coco_panoptic(root: Path, count: int = 6) -> None:
    """COCO panoptic: PNG segment ids (R + 256 G + 256^2 B) and ``segments_info``."""
    categories = [{"id": 1, "name": "person", "isthing": 1}, {"id": 184, "name": "wall", "isthing": 0}]
    for split in ("train", "val"):
        images, annotations = [], []
        for index in range(count):
            name = f"{index:012d}"
            image(root / f"{split}2017" / f"{name}.png")
            ids = np.full(SIZE, 2, np.int64)
            ids[10:30, 10:30] = 1
            png = np.stack([ids % 256, ids // 256 % 256, ids // 65536], -1).astype(np.uint8)
            (root / "annotations" / f"panoptic_{split}2017").mkdir(parents=True, exist_ok=True)
            Image.fromarray(png).save(root / "annotations" / f"panoptic_{split}2017" / f"{name}.png")
            images.append({"id": index, "file_name": f"{name}.png", "height": SIZE[0], "width": SIZE[1]})
            annotations.append({"image_id": index, "file_name": f"{name}.png", "segments_info": [
                {"id": 1, "category_id": 1, "iscrowd": 0}, {"id": 2, "category_id": 184, "iscrowd": 0}]})
        write_json(root / "annotations" / f"panoptic_{split}2017.json",
                   {"images": images, "annotations": annotations, "categories": categories})


def dense(root: Path, kind: str, count: int = 6) -> None:
    """MiDaS / NYU / DIODE style: ``images/`` beside ``depth/`` (metres) or ``normals/`` (unit)."""
    for index in range(count):
        image(root / "images" / f"{index:04d}.png")
        (root / kind).mkdir(parents=True, exist_ok=True)
        if kind == "depth":
            value = np.linspace(1.0, 5.0, SIZE[0], dtype=np.float32)[:, None].repeat(SIZE[1], 1)
        else:
            value = np.tile(np.float32([0.0, -1.0, 0.0]), (*SIZE, 1))
        np.save(root / kind / f"{index:04d}.npy", value)


def cifar100(root: Path, count: int = 8) -> None:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    with open(folder / "meta", "wb") as file:
        pickle.dump({b"fine_label_names": [f"f{i}".encode() for i in range(100)]}, file)
    for split in ("train", "test"):
        with open(folder / split, "wb") as file:
            pickle.dump({b"fine_labels": [i % 100 for i in range(count)],
                         b"data": RNG.integers(0, 256, (count, 3072), dtype=np.uint8)}, file)


def voc(root: Path, splits: tuple[str, ...], count: int = 6) -> None:
    """A VOCdevkit year folder: JPEG images, XML boxes, palette masks, ImageSets split lists."""
    for split in splits:
        names = [f"{root.name}_{split}{index:02d}" for index in range(count)]
        for name in names:
            image(root / "JPEGImages" / f"{name}.jpg")
            box = "<bndbox><xmin>5</xmin><ymin>6</ymin><xmax>30</xmax><ymax>28</ymax></bndbox>"
            (root / "Annotations").mkdir(parents=True, exist_ok=True)
            (root / "Annotations" / f"{name}.xml").write_text(
                f"<annotation><size><width>{SIZE[1]}</width><height>{SIZE[0]}</height></size><object>"
                f"<name>{VOC_CLASSES[sum(map(ord, name)) % 20]}</name><difficult>0</difficult>{box}</object></annotation>")
            mask = np.zeros(SIZE, np.uint8)
            mask[6:28, 5:30] = 12
            palette = Image.fromarray(mask, "P")
            palette.putpalette([v for i in range(256) for v in (i, i, i)])
            (root / "SegmentationClass").mkdir(parents=True, exist_ok=True)
            palette.save(root / "SegmentationClass" / f"{name}.png")
        for kind in ("Main", "Segmentation"):
            (root / "ImageSets" / kind).mkdir(parents=True, exist_ok=True)
            (root / "ImageSets" / kind / f"{split}.txt").write_text("\n".join(names) + "\n")


def shrink(data: Path) -> list[str]:
    """Overrides: the data roots, and sizes a CPU runs in seconds; the rest is the preset."""
    small = ["model.backbone=resnet18", "model.width=0.25", "model.fpn_channels=32", "image_size=64",
             "label.batch_size=4", "label.workers=0", "transfer.workers=1"]
    roots = {"classification": ("imagenet/train", "imagenet/val"), "detection": ("objects365", "objects365"),
             "segmentation": ("coco", "coco"), "depth": ("midas/train", "midas/val")}
    for task, (train, val) in roots.items():
        small += [f"teachers.{task}.data.root={data / train}", f"teachers.{task}.val.root={data / val}",
                  f"teachers.{task}.train.steps=2", f"teachers.{task}.train.batch_size=4",
                  f"teachers.{task}.train.warmup_steps=0", f"teachers.{task}.image_size=64"]
    small += [f"pool.root={data / 'imagenet/train'}", "student.train.steps=2", "student.train.batch_size=4",
              "student.train.warmup_steps=0"]
    downstream = {"classification": ("cifar", "cifar"), "detection": ("VOC2007", "VOC2007"),
                  "segmentation": ("VOC2012", "VOC2012"), "depth": ("nyu/train", "nyu/test"),
                  "normals": ("diode/train", "diode/val")}
    for task, (train, test) in downstream.items():
        small += [f"transfer.tasks.{task}.train.root={data / train}",
                  f"transfer.tasks.{task}.test.root={data / test}", f"transfer.tasks.{task}.lrs=[0.01]",
                  f"transfer.tasks.{task}.steps=[2]", f"transfer.tasks.{task}.batch_size=4",
                  f"transfer.tasks.{task}.image_size=64"]
    voc2012 = data / "VOC2012"
    small.append(f"transfer.tasks.detection.more_train=[{{format: voc, root: {voc2012}, split: trainval, "
                 "tasks: [detection]}]")
    return small


@pytest.mark.timeout(600)
def test_paper_preset_runs_on_its_formats(tmp_path: Path) -> None:
    data = tmp_path / "data"
    imagenet(data / "imagenet")
    coco_detection(data / "objects365")
    coco_panoptic(data / "coco")
    dense(data / "midas" / "train", "depth")
    dense(data / "midas" / "val", "depth")
    cifar100(data / "cifar")
    voc(data / "VOC2007", ("trainval", "test"))
    voc(data / "VOC2012", ("train", "val", "trainval"))
    for split in ("train", "test"):
        dense(data / "nyu" / split, "depth")
    for split in ("train", "val"):
        dense(data / "diode" / split, "normals")

    out = tmp_path / "run"
    assert run_demo("paper", out, shrink(data)) == 0
    results = json.loads((out / "report" / "results.json").read_text())
    assert set(results["transfer"]) == {"scratch", "supervised", "must"}
    for row in results["transfer"].values():
        assert set(row) == {"classification", "detection", "segmentation", "depth", "normals"}
        assert all(np.isfinite(entry["value"]) for entry in row.values())
    assert set(results["teacher_vs_student"]) == {"classification", "detection", "segmentation", "depth"}
    manifest = json.loads((out / "pseudo" / "pool" / "manifest.json").read_text())
    assert manifest["counts"]["labeled"] == 8  # every ImageNet train image got pseudo labels
