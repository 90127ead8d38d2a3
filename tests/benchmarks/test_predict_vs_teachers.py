"""Smoke test of the ``predict_vs_teachers`` benchmark at a toy size: it runs ``must predict``
end to end on both sides and returns positive finite figures under its stable keys."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # the benchmarks/ folder is not part of the installed package

from benchmarks import common, predict_vs_teachers  # noqa: E402


def test_predict_vs_teachers(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(common, "CACHE", tmp_path_factory.getbasetemp() / "bench-cache")
    config = common.model_config(width=0.125, fpn_channels=16)
    result = predict_vs_teachers.measure(config, count=4, size=32, batch_size=2, repeats=1)
    for key in ("value", "student_images_per_s", "teachers_images_per_s"):
        assert isinstance(result[key], float) and math.isfinite(result[key]) and result[key] > 0, key
    assert result["images"] == 4
