"""The labeler end to end on tiny random teachers: shards, manifest, thresholds, sizes,
determinism, bad input. (Resume after SIGKILL and torchrun: test_labeler_processes.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from must.data.readers import DatasetConfig, DataError
from must.data.sample import IGNORE_INDEX
from must.label import CallableTeacher, LabelConfig, PseudoLabels, TeacherError, label_dataset
from must.label.manifest import read_manifest
from must.tasks import ClassificationTask, DepthTask, DetectionTask, SegmentationTask
from must.files import file_sha256
from must.label.teachers import read_record, save_record

from .conftest import TEACHER_OPTIONS, WORLD_COUNT, WORLD_SIZE, make_teacher


def folder(world: Path) -> DatasetConfig:
    return DatasetConfig(format="folder", root=str(world / "images"))


def shard_bytes(out: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(out.glob("shard-*.tar"))}


def test_four_teachers_write_shards_and_manifest(world: Path, teachers: dict[str, Path],
                                                 tmp_path: Path) -> None:
    config = LabelConfig(teachers=tuple(str(p) for p in teachers.values()), data=folder(world),
                         batch_size=8, workers=0, images_per_shard=16)
    path = label_dataset(config, tmp_path / "out")
    manifest = read_manifest(path.parent)
    assert [shard.name for shard in manifest.shards] == [f"shard-{i:06d}.tar" for i in range(3)]
    assert [shard.samples for shard in manifest.shards] == [16, 16, 8]
    assert [(s.first_index, s.end_index) for s in manifest.shards] == [(0, 16), (16, 32), (32, 40)]
    for shard in manifest.shards:
        assert shard.sha256 == file_sha256(tmp_path / "out" / shard.name)
        assert shard.bytes == (tmp_path / "out" / shard.name).stat().st_size
    assert manifest.counts == {"dataset_images": WORLD_COUNT, "labeled": WORLD_COUNT, "skipped": 0,
                               "shards": 3}
    by_task = {teacher.task: teacher for teacher in manifest.teachers}
    assert set(by_task) == set(TEACHER_OPTIONS)
    for task, directory in teachers.items():
        assert by_task[task].checkpoint_sha256 == file_sha256(directory / "checkpoint.pt")
        assert by_task[task].batch_size == 16 and by_task[task].learning_rate == 0.05
    assert by_task["detection"].threshold == 0.5 and by_task["segmentation"].threshold == 0.5
    assert by_task["classification"].class_names == TEACHER_OPTIONS["classification"]["class_names"]
    assert manifest.data["format"] == "folder" and manifest.label_size == "source"
    statistics = manifest.statistics
    assert statistics["classification"]["images"] == WORLD_COUNT
    assert sum(statistics["classification"]["argmax_counts"]) == WORLD_COUNT
    assert 0 < statistics["classification"]["mean_max_probability"] <= 1
    assert 0 <= statistics["segmentation"]["ignored_pixel_fraction"] <= 1
    assert statistics["detection"]["mean_boxes_per_image"] >= 0
    assert statistics["depth"]["min"] > 0  # softplus depth

    labels = PseudoLabels(tmp_path / "out")
    assert len(labels) == WORLD_COUNT
    sample = labels.get(labels.keys[0])
    assert sample["classification"].shape == (12,)
    assert sample["segmentation"].shape == (WORLD_SIZE, WORLD_SIZE)
    assert sample["depth"].shape == (WORLD_SIZE, WORLD_SIZE)
    assert set(sample["detection"]) == {"boxes", "labels", "scores"}
    # the manifest's ignored fraction is the mean over the stored maps
    ignored = np.mean([float((labels.get(k)["segmentation"] == IGNORE_INDEX).float().mean())
                       for k in labels.keys])
    assert statistics["segmentation"]["ignored_pixel_fraction"] == pytest.approx(ignored)


def test_same_input_gives_identical_bytes_with_any_workers(world: Path, teachers: dict[str, Path],
                                                           tmp_path: Path) -> None:
    base = LabelConfig(teachers=(str(teachers["segmentation"]), str(teachers["detection"])),
                       data=folder(world), batch_size=8, workers=0, images_per_shard=16)
    label_dataset(base, tmp_path / "a")
    label_dataset(LabelConfig(**{**base.__dict__, "workers": 2}), tmp_path / "b")
    assert shard_bytes(tmp_path / "a") == shard_bytes(tmp_path / "b")
    manifests = [json.loads((tmp_path / f"{run}/manifest.json").read_text()) for run in "ab"]
    assert manifests[0].pop("config")["workers"] == 0 and manifests[1].pop("config")["workers"] == 2
    assert manifests[0] == manifests[1]


def _detector(images: torch.Tensor) -> list[dict[str, torch.Tensor]]:
    boxes = torch.tensor([[0.0, 0.0, 8.0, 8.0], [2.0, 2.0, 4.0, 6.0], [1, 1, 3, 3], [4, 4, 5, 5]])
    return [{"boxes": boxes, "labels": torch.tensor([0, 1, 2, 1]),
             "scores": torch.tensor([0.9, 0.5, 0.49, 0.1])} for _ in images]


def _segmenter(images: torch.Tensor) -> list[torch.Tensor]:
    """3 classes on a 16x16 input: left half class 0 with p = 0.8, right half class 2 with p = 0.4."""
    probabilities = torch.zeros(3, 16, 16)
    probabilities[:, :, :8] = torch.tensor([0.8, 0.1, 0.1])[:, None, None]
    probabilities[:, :, 8:] = torch.tensor([0.3, 0.3, 0.4])[:, None, None]
    return [probabilities.clone() for _ in images]


def _callables() -> list[CallableTeacher]:
    return [CallableTeacher(DetectionTask(3), _detector, "boxes", input_size=16),
            CallableTeacher(SegmentationTask(3), _segmenter, "halves", input_size=16)]


def test_thresholds_and_mapping_to_source_size(world: Path, tmp_path: Path) -> None:
    config = LabelConfig(teachers=(), data=folder(world), workers=0, images_per_shard=100)
    label_dataset(config, tmp_path / "default", extra_teachers=_callables())
    labels = PseudoLabels(tmp_path / "default")
    target = labels.get(labels.keys[3])
    # inputs are 16x16, the source 32x32: boxes double, maps are stored at 32x32
    assert torch.equal(target["detection"]["boxes"], torch.tensor([[0.0, 0, 16, 16], [4, 4, 8, 12]]))
    assert target["detection"]["labels"].tolist() == [0, 1]  # 0.49 and 0.1 dropped
    segmentation = target["segmentation"]
    assert segmentation.shape == (WORLD_SIZE, WORLD_SIZE)
    assert (segmentation[:, :15] == 0).all() and (segmentation[:, 17:] == IGNORE_INDEX).all()
    manifest = labels.manifest
    assert manifest.statistics["detection"]["mean_boxes_per_image"] == 2.0
    assert manifest.statistics["segmentation"]["ignored_pixel_fraction"] == pytest.approx(0.5, abs=0.04)

    strict = LabelConfig(teachers=(), data=folder(world), workers=0,
                         thresholds={"detection": 0.85, "segmentation": 0.3})
    label_dataset(strict, tmp_path / "strict", extra_teachers=_callables())
    target = PseudoLabels(tmp_path / "strict").get(labels.keys[3])
    assert target["detection"]["labels"].tolist() == [0]
    assert set(target["segmentation"].unique().tolist()) == {0, 2}
    assert {t.task: t.threshold for t in read_manifest(tmp_path / "strict").teachers} == {
        "detection": 0.85, "segmentation": 0.3}


def test_teacher_at_another_input_size(world: Path, tmp_path: Path) -> None:
    directory = make_teacher(tmp_path / "seg24", "segmentation", image_size=24, num_classes=4)
    config = LabelConfig(teachers=(str(directory),), data=folder(world), workers=0)
    labels = PseudoLabels(label_dataset(config, tmp_path / "out").parent)
    assert labels.manifest.teachers[0].input_size == 24
    assert labels.get(labels.keys[0])["segmentation"].shape == (WORLD_SIZE, WORLD_SIZE)


def test_top_k_classification(world: Path, teachers: dict[str, Path], tmp_path: Path) -> None:
    config = LabelConfig(teachers=(str(teachers["classification"]),), data=folder(world), workers=0,
                         top_k=3)
    labels = PseudoLabels(label_dataset(config, tmp_path / "out").parent)
    probabilities = labels.get(labels.keys[0])["classification"]
    assert probabilities.shape == (12,) and int((probabilities > 0).sum()) == 3
    assert float(probabilities.sum()) == pytest.approx(1.0)


def _images_with_a_broken_jpeg(root: Path) -> Path:
    """img0..img4.jpg (img2 cut in its scan data: passes the header check, fails to decode) and
    img5.png (cut in its header: refused when the folder is opened)."""
    root.mkdir()
    noise = np.random.default_rng(0).integers(0, 255, (32, 40, 3), dtype=np.uint8)
    for index in range(5):
        Image.fromarray(noise // (index + 1)).save(root / f"img{index}.jpg", quality=95)
    data = (root / "img2.jpg").read_bytes()
    (root / "img2.jpg").write_bytes(data[: int(len(data) * 0.7)])
    Image.fromarray(noise).save(root / "img5.png")
    (root / "img5.png").write_bytes((root / "img5.png").read_bytes()[:20])
    return root


def test_bad_images_stop_or_are_recorded(tmp_path: Path) -> None:
    root = _images_with_a_broken_jpeg(tmp_path / "images")
    teacher = CallableTeacher(ClassificationTask(2), lambda x: [torch.tensor([0.3, 0.7])] * len(x),
                              "constant", input_size=8)
    with pytest.raises(DataError, match="img5.png"):
        label_dataset(LabelConfig(teachers=(), data=DatasetConfig("folder", str(root)), workers=0),
                      tmp_path / "stop", extra_teachers=[teacher])
    config = LabelConfig(teachers=(), data=DatasetConfig("folder", str(root)),
                         workers=0, images_per_shard=2, skip_bad=True)
    with pytest.warns(UserWarning):
        manifest = read_manifest(label_dataset(config, tmp_path / "skip", extra_teachers=[teacher]).parent)
    assert manifest.counts == {"dataset_images": 5, "labeled": 4, "skipped": 2, "shards": 3}
    skipped = {Path(s.path).name: s for s in manifest.skipped}
    assert set(skipped) == {"img2.jpg", "img5.png"}
    assert skipped["img2.jpg"].key == "img2" and skipped["img2.jpg"].shard == "shard-000001.tar"
    assert skipped["img5.png"].shard is None
    assert PseudoLabels(tmp_path / "skip").keys == ["img0", "img1", "img3", "img4"]


def test_broken_jpeg_without_skip_bad_names_the_file(tmp_path: Path) -> None:
    root = _images_with_a_broken_jpeg(tmp_path / "images")
    (root / "img5.png").unlink()
    teacher = CallableTeacher(ClassificationTask(2), lambda x: [torch.tensor([0.3, 0.7])] * len(x),
                              "constant", input_size=8)
    with pytest.raises(DataError, match="img2.jpg"):
        label_dataset(LabelConfig(teachers=(), data=DatasetConfig("folder", str(root)), workers=1),
                      tmp_path / "out", extra_teachers=[teacher])
    assert not list((tmp_path / "out").glob("shard-*.tar")) and not list((tmp_path / "out").glob(".*tmp"))


def test_checkpoint_of_another_task_or_class_count(teachers: dict[str, Path], world: Path,
                                                   tmp_path: Path) -> None:
    directory = make_teacher(tmp_path / "t", "classification", num_classes=12)
    record = read_record(directory)
    save_record(record.__class__(**{**record.__dict__, "task": "segmentation"}), directory)
    config = LabelConfig(teachers=(str(directory),), data=folder(world), workers=0)
    with pytest.raises(TeacherError, match="'segmentation' head"):
        label_dataset(config, tmp_path / "a")
    save_record(record.__class__(**{**record.__dict__, "task_options": {"num_classes": 5}}), directory)
    with pytest.raises(TeacherError, match="class count"):
        label_dataset(config, tmp_path / "b")
    pinned = LabelConfig(teachers=(f"depth={teachers['classification']}",), data=folder(world))
    with pytest.raises(TeacherError, match="not 'depth'"):
        label_dataset(pinned, tmp_path / "c")


def test_class_list_must_match_the_datasets_real_labels(world: Path, tmp_path: Path) -> None:
    directory = make_teacher(tmp_path / "t", "classification", num_classes=12,
                             class_names=[f"c{i}" for i in range(12)])
    partially_labeled = DatasetConfig("world", str(world), tasks=("classification",))
    with pytest.raises(TeacherError, match="real and pseudo labels would disagree"):
        label_dataset(LabelConfig(teachers=(str(directory),), data=partially_labeled), tmp_path / "o")


def test_configuration_errors(world: Path, teachers: dict[str, Path], tmp_path: Path) -> None:
    twice = LabelConfig(teachers=(str(teachers["depth"]), str(teachers["depth"])), data=folder(world))
    with pytest.raises(TeacherError, match="several teachers"):
        label_dataset(twice, tmp_path / "a")
    unknown = LabelConfig(teachers=(str(teachers["depth"]),), data=folder(world),
                          thresholds={"detection": 0.5})
    with pytest.raises(TeacherError, match="no teacher labels"):
        label_dataset(unknown, tmp_path / "b")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        label_dataset(LabelConfig(teachers=(str(tmp_path / "nowhere"),), data=folder(world)), tmp_path / "c")
    with pytest.raises(ValueError, match="thresholds.detection"):
        LabelConfig(teachers=(), data=folder(world), thresholds={"detection": 1.5})


def test_output_of_another_labeling_is_not_resumed(world: Path, teachers: dict[str, Path],
                                                   tmp_path: Path) -> None:
    first = LabelConfig(teachers=(str(teachers["depth"]),), data=folder(world), workers=0,
                        images_per_shard=20)
    label_dataset(first, tmp_path / "out")
    before = shard_bytes(tmp_path / "out")
    label_dataset(first, tmp_path / "out")  # complete: nothing to redo
    assert shard_bytes(tmp_path / "out") == before
    other = LabelConfig(teachers=(str(teachers["classification"]),), data=folder(world), workers=0,
                        images_per_shard=20)
    with pytest.raises(ValueError, match="another labeling.*teachers"):
        label_dataset(other, tmp_path / "out")
    run = json.loads((tmp_path / "out/labeling.json").read_text())
    assert run["fingerprint"]["images"] == WORLD_COUNT


def _random_pngs(root: Path, count: int) -> Path:
    root.mkdir(parents=True)
    pixels = np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    for index in range(count):
        Image.fromarray(np.roll(pixels, index, axis=1)).save(root / f"{index:05d}.png", compress_level=0)
    return root


def _peak_python_memory(root: Path, out: Path) -> int:
    """Peak Python heap while labeling (tracemalloc: the labels' bytes and any per-image objects
    the labeler keeps; tensors' storage is not traced, but their encoded bytes are)."""
    import tracemalloc

    depth = CallableTeacher(DepthTask(), lambda images: list(images.mean(dim=1) + 1), "mean",
                            input_size=32)
    config = LabelConfig(teachers=(), data=DatasetConfig("folder", str(root)), workers=0,
                         batch_size=50, images_per_shard=100)
    tracemalloc.start()
    try:
        label_dataset(config, out, extra_teachers=[depth])
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_does_not_grow_with_the_image_count(tmp_path: Path) -> None:
    """M8: 4x the images, about the same peak (labels are streamed into one shard at a time;
    keeping them all would add ~2 KB per image = 1.2 MB here)."""
    small = _peak_python_memory(_random_pngs(tmp_path / "200", 200), tmp_path / "out200")
    large = _peak_python_memory(_random_pngs(tmp_path / "800", 800), tmp_path / "out800")
    assert len(list((tmp_path / "out800").glob("shard-*.tar"))) == 8
    print(f"peak Python heap: {small / 1e6:.2f} MB for 200 images, {large / 1e6:.2f} MB for 800")
    assert large - small < 600_000  # measured ~270 KB: the reader's per-image paths and keys


def _bright_box(image: torch.Tensor) -> list[float]:
    """The xyxy box of an image's bright pixels."""
    ys, xs = torch.nonzero(image.mean(0) > 0.5, as_tuple=True)
    return [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]


def _non_square_images(root: Path) -> dict[str, tuple[int, int, int, int]]:
    """A wide (32x64) and a tall (64x32) image, black with one white rectangle; key -> its box."""
    root.mkdir()
    boxes = {"wide": ((32, 64), (16, 8, 48, 24)), "tall": ((64, 32), (8, 16, 24, 48))}
    for key, ((height, width), (left, top, right, bottom)) in boxes.items():
        pixels = np.zeros((height, width, 3), dtype=np.uint8)
        pixels[top:bottom, left:right] = 255
        Image.fromarray(pixels).save(root / f"{key}.png")
    return {key: box for key, (_, box) in boxes.items()}


def test_non_square_images_are_labeled_in_their_true_geometry(tmp_path: Path) -> None:
    """Teachers see each image with its aspect ratio (fitted to 16x16, padded below or to the
    right); their boxes and maps come back aligned with the source image, padding dropped."""
    source_boxes = _non_square_images(tmp_path / "images")
    seen: list[list[float]] = []

    def detector(images: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        seen.extend(_bright_box(image) for image in images)
        whole_input = [0.0, 0.0, 16.0, 16.0]  # reaches into the padding: clipped to the image
        return [{"boxes": torch.tensor([_bright_box(image), whole_input]), "labels": torch.tensor([1, 0]),
                 "scores": torch.tensor([0.9, 0.9])} for image in images]

    def segmenter(images: torch.Tensor) -> list[torch.Tensor]:
        bright = (images.mean(1) > 0.5).float()
        return list(torch.stack([1 - bright, bright], dim=1))

    teachers = [CallableTeacher(DetectionTask(2), detector, "bright-box", input_size=16),
                CallableTeacher(SegmentationTask(2), segmenter, "bright-mask", input_size=16)]
    config = LabelConfig(teachers=(), data=DatasetConfig("folder", str(tmp_path / "images")), workers=0)
    labels = PseudoLabels(label_dataset(config, tmp_path / "out", extra_teachers=teachers).parent)
    # what the detector saw: the rectangles at a quarter of their size, aspect ratio kept
    assert sorted(seen) == [[2.0, 4.0, 6.0, 12.0], [4.0, 2.0, 12.0, 6.0]]
    for key, (left, top, right, bottom) in source_boxes.items():
        target = labels.get(key)
        height, width = (32, 64) if key == "wide" else (64, 32)
        assert target["detection"]["boxes"].tolist() == [[left, top, right, bottom], [0, 0, width, height]]
        expected = torch.zeros(height, width, dtype=torch.long)
        expected[top:bottom, left:right] = 1
        wrong = {tuple(pixel) for pixel in (target["segmentation"] != expected).nonzero().tolist()}
        corners = {(y, x) for y in (top, bottom - 1) for x in (left, right - 1)}
        assert wrong <= corners, key  # bilinear upsampling rounds the rectangle's corners only
