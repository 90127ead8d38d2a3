"""``TarStream`` writes the bytes WebDataset's ``TarWriter`` (i.e. ``tarfile``) writes."""

from __future__ import annotations

import io
import tarfile

import numpy as np
from webdataset import TarWriter

from must.label.tar import TarStream

OWNER = dict(user="must", group="must", mode=0o444, mtime=0)


def _samples() -> list[dict[str, bytes]]:
    rng = np.random.default_rng(0)
    sizes = [0, 1, 511, 512, 513, 1024, 5000]
    samples = [{"__key__": f"key{i:03d}", "a.npy": rng.bytes(size), "b.png": rng.bytes(7)}
               for i, size in enumerate(sizes)]
    samples.append({"__key__": "dir/" + "x" * 120, "long.npy": b"long name: a pax extended header"})
    samples.append({"__key__": "café/sub", "depth.npy": rng.bytes(300)})
    return samples


def _webdataset_bytes(samples: list[dict[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    writer = TarWriter(buffer, encoder=False, **OWNER)
    for sample in samples:
        writer.write(sample)
    writer.tarstream.close()  # TarWriter.close would close the BytesIO too
    return buffer.getvalue()


def _our_bytes(samples: list[dict[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    stream = TarStream(buffer, **OWNER)
    for sample in samples:
        for entry in sorted(k for k in sample if k != "__key__"):
            stream.add(f"{sample['__key__']}.{entry}", sample[entry])
    stream.close()
    assert stream.offset == len(buffer.getvalue())
    return buffer.getvalue()


def test_same_bytes_as_webdataset_tarwriter() -> None:
    samples = _samples()
    ours = _our_bytes(samples)
    assert ours == _webdataset_bytes(samples)
    assert len(ours) % tarfile.RECORDSIZE == 0


def test_tarfile_reads_every_member_back() -> None:
    samples = _samples()
    with tarfile.open(fileobj=io.BytesIO(_our_bytes(samples))) as archive:
        members = {m.name: archive.extractfile(m).read() for m in archive}
        owners = {(m.uname, m.gname, m.mode, m.mtime) for m in archive.getmembers()}
    expected = {f"{s['__key__']}.{k}": v for s in samples for k, v in s.items() if k != "__key__"}
    assert members == expected
    assert owners == {("must", "must", 0o444, 0)}


def test_empty_archive_is_tarfiles() -> None:
    assert _our_bytes([]) == _webdataset_bytes([])
