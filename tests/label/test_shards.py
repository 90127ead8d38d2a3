"""Every task's pseudo label survives a shard round trip; shards are deterministic, readable by
webdataset itself, and keys with dots or slashes come back intact."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest
import torch
import webdataset

from must.data.sample import IGNORE_INDEX
from must.files import remove_stale_temporaries
from must.label.shards import (ShardError, ShardWriter, decode_key, decode_labels, encode_key,
                               encode_labels, index_shard, iterate_shard)


def _labels(seed: int) -> dict[str, object]:
    generator = torch.Generator().manual_seed(seed)
    probabilities = torch.rand(7, generator=generator)
    segmentation = torch.randint(0, 5, (9, 11), generator=generator)
    segmentation[0, :4] = IGNORE_INDEX
    return {
        "classification": probabilities / probabilities.sum(),
        "detection": {"boxes": torch.tensor([[1.5, 2.0, 7.25, 9.0], [0.0, 0.0, 3.0, 4.0]]),
                      "labels": torch.tensor([3, 0]), "scores": torch.tensor([0.9, 0.55])},
        "segmentation": segmentation,
        "depth": torch.rand(9, 11, generator=generator) * 10,
        "normals": torch.nn.functional.normalize(torch.randn(3, 9, 11, generator=generator), dim=0),
    }


def _write(path: Path, samples: dict[str, dict[str, object]], top_k: int | None = None) -> None:
    writer = ShardWriter(path)
    for key, labels in samples.items():
        writer.write(key, encode_labels(labels, top_k))
    writer.finish()
    writer.publish()


def test_round_trip_of_every_task(tmp_path: Path) -> None:
    samples = {"a/img.v2": _labels(0), "b-01": _labels(1)}
    path = tmp_path / "shard-000000.tar"
    _write(path, samples)
    read = dict(iterate_shard(path))
    assert list(read) == list(samples)
    for key, labels in samples.items():
        decoded = decode_labels(read[key])
        assert decoded["classification"].dtype == torch.float32
        torch.testing.assert_close(decoded["classification"], labels["classification"], atol=1e-3, rtol=0)
        assert abs(float(decoded["classification"].sum()) - 1.0) < 1e-6
        for name in ("boxes", "labels", "scores"):
            assert torch.equal(decoded["detection"][name], labels["detection"][name])
        assert decoded["detection"]["labels"].dtype == torch.int64
        assert decoded["segmentation"].dtype == torch.int64
        assert torch.equal(decoded["segmentation"], labels["segmentation"])
        assert decoded["depth"].dtype == torch.float32 and decoded["depth"].shape == (9, 11)
        torch.testing.assert_close(decoded["depth"], labels["depth"], atol=1e-2, rtol=1e-3)
        torch.testing.assert_close(decoded["normals"], labels["normals"], atol=1e-3, rtol=0)


def test_top_k_form_keeps_k_classes(tmp_path: Path) -> None:
    labels = {"classification": torch.tensor([0.05, 0.5, 0.1, 0.3, 0.05])}
    path = tmp_path / "s.tar"
    _write(path, {"k": labels}, top_k=2)
    entries = dict(iterate_shard(path))["k"]
    assert sorted(entries) == ["classification.indices.npy", "classification.values.npy"]
    decoded = decode_labels(entries, {"classification": 5})["classification"]
    torch.testing.assert_close(decoded, torch.tensor([0, 0.5 / 0.8, 0, 0.3 / 0.8, 0]), atol=1e-3, rtol=0)


def test_depth_beyond_float16_is_stored_as_float32(tmp_path: Path) -> None:
    depth = torch.tensor([[1.0, 1e6]])
    decoded = decode_labels(encode_labels({"depth": depth}))["depth"]
    assert torch.equal(decoded, depth)


def test_bytes_are_deterministic_and_members_fixed(tmp_path: Path) -> None:
    samples = {f"k{i}": _labels(i) for i in range(3)}
    _write(tmp_path / "one.tar", samples)
    _write(tmp_path / "two.tar", samples)
    assert (tmp_path / "one.tar").read_bytes() == (tmp_path / "two.tar").read_bytes()
    with tarfile.open(tmp_path / "one.tar") as archive:
        members = archive.getmembers()
    assert {(m.mtime, m.uid, m.gid, m.uname, m.gname, m.mode) for m in members} == {
        (0, 0, 0, "must", "must", 0o444)}
    names = [m.name for m in members]
    assert names[:3] == ["k0.classification.npy", "k0.depth.npy", "k0.detection.boxes.npy"]


def test_webdataset_reads_our_shards(tmp_path: Path) -> None:
    samples = {"x.y/z": _labels(0), "w": _labels(1)}
    path = tmp_path / "shard-000000.tar"
    _write(path, samples)
    read = list(webdataset.WebDataset(str(path), shardshuffle=False, empty_check=False))
    assert [decode_key(sample["__key__"]) for sample in read] == list(samples)
    assert "segmentation.png" in read[0] and "detection.boxes.npy" in read[0]


@pytest.mark.parametrize("key", ["plain", "a/b/c", "dots.in.name", "sp ace%", "/lead", "ünï"])
def test_key_encoding_round_trip(key: str) -> None:
    encoded = encode_key(key)
    assert "." not in encoded and not encoded.startswith("/")
    assert decode_key(encoded) == key


def test_crash_leaves_only_a_temporary_file(tmp_path: Path) -> None:
    path = tmp_path / "shard-000000.tar"
    writer = ShardWriter(path)
    writer.write("a", encode_labels(_labels(0)))
    assert not path.exists() and writer.temporary.exists()
    remove_stale_temporaries(path)
    assert not writer.temporary.exists()


def test_truncated_shard_is_an_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "shard-000003.tar"
    _write(path, {f"k{i}": _labels(i) for i in range(3)})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(ShardError, match="shard-000003.tar"):
        for _ in iterate_shard(path):
            pass
    with pytest.raises(ShardError, match="not found"):
        index_shard(tmp_path / "missing.tar")


def test_segmentation_label_out_of_range_is_refused() -> None:
    with pytest.raises(ValueError, match="segmentation labels"):
        encode_labels({"segmentation": torch.tensor([[300]])})
