"""Reading pseudo labels back: shard verification, key lookup, merging into a reader's samples
(real labels win, MuST sec. 3.4), errors, pickling for DataLoader workers."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from must.data.readers import DatasetConfig, open_dataset
from must.data.sample import IGNORE_INDEX
from must.label import LabelConfig, PseudoLabels, ShardError, WithPseudoLabels, label_dataset
from must.label.manifest import MANIFEST_NAME
from must.world import generate

from .conftest import WORLD_COUNT, WORLD_SIZE


@pytest.fixture(scope="module")
def labeled(world: Path, teachers: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Classification + segmentation + depth pseudo labels of the world's keys."""
    config = LabelConfig(teachers=tuple(str(teachers[t]) for t in ("classification", "segmentation", "depth")),
                         data=DatasetConfig("world", str(world), tasks=("classification",)),
                         workers=0, images_per_shard=16)
    return label_dataset(config, tmp_path_factory.mktemp("pseudo") / "out").parent


def test_get_returns_sample_conventions(labeled: Path) -> None:
    labels = PseudoLabels(labeled)
    assert len(labels) == WORLD_COUNT and labels.keys[0] == "pool-000000" and "pool-000039" in labels
    target = labels.get("pool-000007")
    assert target["classification"].dtype == torch.float32 and target["classification"].shape == (12,)
    assert target["segmentation"].dtype == torch.int64
    assert target["segmentation"].shape == (WORLD_SIZE, WORLD_SIZE)
    assert int(target["segmentation"].max()) <= IGNORE_INDEX
    assert target["depth"].dtype == torch.float32
    assert set(labels.get("pool-000007", tasks=["depth"])) == {"depth"}
    with pytest.raises(ShardError, match="no pseudo label for key 'nope'"):
        labels.get("nope")


def test_real_labels_win_and_pseudo_fill_the_rest(labeled: Path, world: Path) -> None:
    base = open_dataset(DatasetConfig("world", str(world), tasks=("classification",)))
    merged = WithPseudoLabels(base, [PseudoLabels(labeled)])
    assert len(merged) == WORLD_COUNT and merged.keys == base.keys
    sample = merged[5]
    real = base[5].targets["classification"]
    assert sample.targets["classification"].dim() == 0 and int(sample.targets["classification"]) == int(real)
    assert set(sample.targets) == {"classification", "segmentation", "depth"}
    assert sample.targets["segmentation"].shape == sample.size
    assert merged.tasks == ("classification", "segmentation", "depth")
    assert merged.classes["classification"] == base.classes["classification"]


def test_unlabeled_keys_are_an_error_or_skipped(labeled: Path, world: Path, teachers: dict[str, Path],
                                                tmp_path: Path) -> None:
    partial = LabelConfig(teachers=(str(teachers["depth"]),),
                          data=DatasetConfig("world", str(world), limit=10), workers=0)
    label_dataset(partial, tmp_path / "partial")
    base = open_dataset(DatasetConfig("world", str(world), tasks=("segmentation",)))
    with pytest.raises(ShardError, match="no pseudo label for key 'pool-000010'.*30 of 40"):
        WithPseudoLabels(base, [PseudoLabels(tmp_path / "partial")])
    skipping = WithPseudoLabels(base, [PseudoLabels(tmp_path / "partial")], missing="skip")
    assert skipping.keys == [f"pool-{i:06d}" for i in range(10)]
    assert set(skipping[3].targets) == {"segmentation", "depth"}


def test_two_sources_for_one_task_and_class_mismatch(labeled: Path, world: Path) -> None:
    base = open_dataset(DatasetConfig("world", str(world), tasks=("classification",)))
    with pytest.raises(ValueError, match="task 'classification' has pseudo labels in both"):
        WithPseudoLabels(base, [PseudoLabels(labeled), PseudoLabels(labeled)])
    base.classes["classification"] = [f"other{i}" for i in range(12)]
    with pytest.raises(ValueError, match="classification pseudo labels use classes"):
        WithPseudoLabels(base, [PseudoLabels(labeled)])


def test_dense_labels_of_another_image_size(labeled: Path, tmp_path: Path) -> None:
    small = generate("pool", tmp_path / "small", count=WORLD_COUNT, size=16, seed=0, progress=False)
    base = open_dataset(DatasetConfig("world", str(small), tasks=("classification",)))
    merged = WithPseudoLabels(base, [PseudoLabels(labeled)])
    with pytest.raises(ValueError, match=r"(depth|segmentation) pseudo label of 'pool-000000' is \(32, 32\)"):
        merged[0]


def test_truncated_modified_and_missing_shards_are_named(labeled: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    copy.mkdir()
    for path in labeled.iterdir():
        (copy / path.name).write_bytes(path.read_bytes())
    shard = copy / "shard-000001.tar"
    original = shard.read_bytes()
    shard.write_bytes(original[:-3000])
    for verify in ("sha256", "size"):
        with pytest.raises(ShardError, match="shard-000001.tar.*truncated"):
            PseudoLabels(copy, verify=verify)  # type: ignore[arg-type]
    changed = bytearray(original)
    changed[700] ^= 0xFF
    shard.write_bytes(bytes(changed))
    with pytest.raises(ShardError, match="shard-000001.tar: SHA-256 differs"):
        PseudoLabels(copy)
    shard.unlink()
    with pytest.raises(ShardError, match="shard-000001.tar: shard listed in the manifest is missing"):
        PseudoLabels(copy)
    shard.write_bytes(original)
    manifest = json.loads((copy / MANIFEST_NAME).read_text())
    manifest["shards"][1]["samples"] = 99
    (copy / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(ShardError, match="shard-000001.tar: 16 samples, the manifest says 99"):
        PseudoLabels(copy)
    (copy / MANIFEST_NAME).unlink()
    with pytest.raises(FileNotFoundError, match="no manifest"):
        PseudoLabels(copy)


def _keys_and_depth(samples: list) -> list:
    return [(sample.key, float(sample.targets["depth"].mean())) for sample in samples]


def test_pickles_and_runs_in_dataloader_workers(labeled: Path, world: Path) -> None:
    labels = PseudoLabels(labeled)
    labels.get("pool-000001")  # opens a file: it must not travel in the pickle
    restored = pickle.loads(pickle.dumps(labels))
    assert torch.equal(restored.get("pool-000002")["depth"], labels.get("pool-000002")["depth"])
    base = open_dataset(DatasetConfig("world", str(world), tasks=("classification",)))
    merged = WithPseudoLabels(base, [labels])
    loader = DataLoader(merged, batch_size=8, num_workers=2, collate_fn=_keys_and_depth)
    from_workers = [item for batch in loader for item in batch]
    assert from_workers == _keys_and_depth([merged[i] for i in range(len(merged))])
