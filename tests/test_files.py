"""Atomic writes (text, bytes, a writer function such as ``torch.save``) and file hashing."""

import hashlib
import os
from pathlib import Path

import pytest
import torch

from must.files import file_sha256, remove_stale_temporaries, temporary_sibling, write_atomic


def test_text_bytes_and_a_writer_function(tmp_path: Path) -> None:
    text = write_atomic(tmp_path / "sub" / "index.html", "ü")  # the parent is made
    assert text.read_text(encoding="utf-8") == "ü"
    assert write_atomic(tmp_path / "b.bin", b"\x00\x01").read_bytes() == b"\x00\x01"
    saved = write_atomic(tmp_path / "s.pt", lambda file: torch.save({"x": torch.ones(2)}, file), durable=True)
    assert torch.equal(torch.load(saved, weights_only=True)["x"], torch.ones(2))
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["b.bin", "index.html", "s.pt", "sub"]


def test_a_failed_write_keeps_the_previous_file_and_no_temporary(tmp_path: Path) -> None:
    path = write_atomic(tmp_path / "checkpoint.pt", lambda file: torch.save({"step": 1}, file))
    with pytest.raises(Exception):
        write_atomic(path, lambda file: torch.save({"bad": lambda: None}, file))  # pickling fails
    assert torch.load(path, weights_only=True)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


def test_stale_temporaries_of_any_process_are_removed(tmp_path: Path) -> None:
    path = tmp_path / "shard.tar"
    mine, other = temporary_sibling(path), tmp_path / f".shard.tar.{os.getpid() + 1}.tmp"
    mine.write_bytes(b"torn"), other.write_bytes(b"torn")
    (tmp_path / ".other.tar.1.tmp").write_bytes(b"kept")  # another file's
    remove_stale_temporaries(path)
    assert [p.name for p in tmp_path.iterdir()] == [".other.tar.1.tmp"]


def test_file_sha256_matches_hashlib(tmp_path: Path) -> None:
    data = os.urandom(3 << 20)  # several read blocks
    path = write_atomic(tmp_path / "data", data)
    assert file_sha256(path) == hashlib.sha256(data).hexdigest()
