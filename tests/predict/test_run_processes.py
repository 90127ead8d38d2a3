"""``must predict`` under a 2-process torchrun (gloo, CPU): the ranks split the images and rank 0
merges, giving the same files as one process."""

from __future__ import annotations

from pathlib import Path

import pytest

from must.cli import main


def files(root: Path) -> dict[str, bytes]:
    return {path.relative_to(root).as_posix(): path.read_bytes() for path in sorted(root.rglob("*"))
            if path.is_file() and path.name != "predict.json"}


@pytest.mark.slow
def test_two_processes_equal_one(student: Path, photos: Path, tmp_path: Path, run_torchrun) -> None:
    # batch_size=1: each image's forward pass is the same whichever rank runs it
    arguments = ["predict", "--model", str(student), "--data", f"folder:{photos}", "--tasks",
                 "detection,segmentation,classification", "batch_size=1"]
    run = run_torchrun("-m", "must.cli", *arguments, "--out", tmp_path / "two", timeout=600)
    assert run.stdout.count("predictions for 4 images") == 1  # printed by rank 0 only
    assert main([*arguments, "--out", str(tmp_path / "one")]) == 0
    two, one = files(tmp_path / "two"), files(tmp_path / "one")
    assert sorted(two) == sorted(one) and "detections.json" in one
    assert two == one
