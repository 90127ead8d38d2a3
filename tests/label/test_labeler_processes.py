"""The labeler across processes: a real SIGKILL mid-run then a rerun, and a 2-process torchrun
(gloo, CPU), both byte-identical to one uninterrupted process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from must.label import LabelConfig, label_dataset

from .test_labeler import shard_bytes

SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    import torch
    from must import config as config_lib
    from must.label import LabelConfig, label_dataset
    from must.label.teachers import ModelTeacher

    config_path, out, slow = sys.argv[1], Path(sys.argv[2]), float(sys.argv[3])
    torch.set_num_threads(1)
    if slow:  # a slow teacher, so a kill lands between shards
        predict = ModelTeacher.predict
        def slow_predict(self, images):
            time.sleep(slow)
            return predict(self, images)
        ModelTeacher.predict = slow_predict
    config = config_lib.from_dict(LabelConfig, json.loads(Path(config_path).read_text()))
    label_dataset(config, out)
    """
)


def _environment() -> dict[str, str]:
    environment = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    environment["OMP_NUM_THREADS"] = "1"
    return environment


def _config(world: Path, teachers: dict[str, Path], tmp_path: Path, workers: int) -> Path:
    config = {"teachers": [str(teachers[t]) for t in ("classification", "segmentation", "depth")],
              "data": {"format": "folder", "root": str(world / "images")},
              "batch_size": 4, "workers": workers, "images_per_shard": 8}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    (tmp_path / "script.py").write_text(SCRIPT)
    return path


def _clean_run(config_path: Path, out: Path) -> dict[str, bytes]:
    from must import config as config_lib

    label_dataset(config_lib.from_dict(LabelConfig, json.loads(config_path.read_text())), out)
    return shard_bytes(out)


@pytest.mark.slow
def test_sigkill_then_rerun_is_byte_identical(world: Path, teachers: dict[str, Path],
                                              tmp_path: Path) -> None:
    config_path = _config(world, teachers, tmp_path, workers=1)
    out = tmp_path / "killed"
    command = [sys.executable, str(tmp_path / "script.py"), str(config_path), str(out), "0.15"]
    process = subprocess.Popen(command, env=_environment(), stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not (out / "shard-000001.tar").exists():
        assert process.poll() is None, process.stderr.read().decode()[-2000:]  # type: ignore[union-attr]
        assert time.monotonic() < deadline, "no shard appeared"
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    process.stderr.close()  # type: ignore[union-attr]
    finished = sorted(path.name for path in out.glob("shard-*.tar"))
    assert 2 <= len(finished) < 5 and not (out / "manifest.json").exists()
    # Usually the next shard is caught half-written (a .tmp file); under load the kill may land
    # between two shards instead. Either way the rerun must finish with identical bytes.
    before = {name: (out / name).stat().st_mtime_ns for name in finished}

    rerun = subprocess.run(command[:-1] + ["0"], env=_environment(), capture_output=True, text=True,
                           timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert {name: (out / name).stat().st_mtime_ns for name in finished} == before  # not redone
    assert not list(out.glob(".shard-*.tmp"))
    assert shard_bytes(out) == _clean_run(config_path, tmp_path / "clean")
    assert len(shard_bytes(out)) == 5 and (out / "manifest.json").exists()


@pytest.mark.slow
def test_two_process_torchrun_equals_one_process(world: Path, teachers: dict[str, Path],
                                                 tmp_path: Path, run_torchrun) -> None:
    config_path = _config(world, teachers, tmp_path, workers=0)
    out = tmp_path / "torchrun"
    run_torchrun(tmp_path / "script.py", config_path, out, "0")
    single = _clean_run(config_path, tmp_path / "single")
    assert shard_bytes(out) == single and len(single) == 5
    manifests = [json.loads((path / "manifest.json").read_text()) for path in (out, tmp_path / "single")]
    assert manifests[0] == manifests[1]
