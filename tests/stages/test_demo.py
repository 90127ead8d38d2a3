"""``must demo`` end to end on the shipped ``tiny`` preset (SPEC B3): world -> four teachers (two at a time) -> labels ->
student -> transfer of scratch / supervised / MuST to five downstream tasks -> report; a second
run of the same preset trains nothing again."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from must.config import ConfigError, read_yaml
from must.stages.demo import TEACHER_DOMAINS, already_done, run_demo, train_teachers
from must.train.checkpoint import load as load_checkpoint

from .conftest import teach_config

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("stages_demo")]

INITS = ("scratch", "supervised", "must")
DOWNSTREAM = ("classification", "detection", "segmentation", "depth", "normals")


def tiny_preset() -> dict[str, Any]:
    """The shipped ``tiny`` preset (``must demo --preset tiny``), as data the tests may change."""
    return read_yaml("tiny")


def training_outputs(run: Path) -> dict[Path, int]:
    """Modification times of every checkpoint and of the records a training stage writes last
    (a stage that reran on a final checkpoint would train nothing but rewrite its record)."""
    paths = [*(run / "teachers").glob("*/checkpoint.pt"), *(run / "teachers").glob("*/teacher.json"),
             run / "student" / "checkpoint.pt", run / "student" / "student.json",
             *(run / "transfer").rglob("checkpoint.pt")]
    return {path: path.stat().st_mtime_ns for path in paths}


def test_demo_runs_end_to_end_and_resumes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    preset = tmp_path / "tiny.yaml"
    preset.write_text(yaml.safe_dump(tiny_preset()))

    assert run_demo(str(preset), run) == 0

    results = json.loads((run / "report" / "results.json").read_text())
    assert set(results["transfer"]) == set(INITS)
    for init in INITS:
        assert set(results["transfer"][init]) == set(DOWNSTREAM), init
        for task, entry in results["transfer"][init].items():
            assert isinstance(entry["metric"], str) and entry["metric"], (init, task)
            assert math.isfinite(entry["value"]), (init, task)
    assert set(results["knn"]) == set(INITS)  # transfer.knn: every row, the classification task only
    assert all(set(results["knn"][init]) == {"classification"} for init in INITS)
    assert all(0 <= results["knn"][init]["classification"]["value"] <= 1 for init in INITS)
    assert set(results["teacher_vs_student"]) == set(TEACHER_DOMAINS)
    for task, row in results["teacher_vs_student"].items():
        assert math.isfinite(row["teacher"]) and math.isfinite(row["student"]), task
    stages = {"world", "teachers", "label", "student", "transfer"}  # the teachers in one pool
    assert stages <= set(results["timings"])
    # The report is written inside its own stage, so only timings.json has it and the total.
    timings = json.loads((run / "timings.json").read_text())
    assert stages | {"report", "total"} <= set(timings)
    assert all(math.isfinite(value) and value >= 0 for value in timings.values())
    outputs = training_outputs(run)
    assert len(outputs) == 2 * len(TEACHER_DOMAINS) + 2 + len(INITS) * len(DOWNSTREAM)

    first = capsys.readouterr().out
    assert "== teachers: " in first and "detection starting (3 steps)" in first
    assert f"== student: starting (3 steps) in {run / 'student'}" in first
    assert "== transfer: starting 15 grid cells" in first

    assert run_demo(str(preset), run) == 0
    assert training_outputs(run) == outputs  # no training stage ran again
    second = capsys.readouterr().out  # each stage says it was skipped, and why
    for stage, directory in [("world", "data"), *((f"teacher/{t}", f"teachers/{t}") for t in TEACHER_DOMAINS),
                             ("label", "pseudo/pool"), ("student", "student"), ("transfer", "transfer"),
                             *((f"knn/{init}", f"transfer/{init}") for init in INITS)]:
        assert f"== {stage}: skipped, {run / directory} holds its finished outputs for this config" in second
    rerun = json.loads((run / "timings.json").read_text())  # a finished stage keeps its first time
    kept = ("world", "teachers", "label", "transfer")
    assert {stage: rerun[stage] for stage in kept} == {stage: timings[stage] for stage in kept}

    # A trained stage of another config is refused, not resumed under the new one (a mix of both)
    changed = tiny_preset()
    changed["teachers"]["detection"] = {"train": {"steps": 4, "batch_size": 4, "lr": 0.05, "progress": False}}
    preset.write_text(yaml.safe_dump(changed))
    refusal = r"teachers/detection holds a run of another config \(differs in train\.steps\)"
    with pytest.raises(ConfigError, match=refusal):
        run_demo(str(preset), run)
    assert training_outputs(run) == outputs

    # Interrupted after the student's last checkpoint and one transfer cell short: both resume, and say so
    preset.write_text(yaml.safe_dump(tiny_preset()))
    (run / "student" / "student.json").unlink()
    next((run / "transfer" / "must" / "depth").rglob("result.json")).unlink()
    capsys.readouterr()
    assert run_demo(str(preset), run) == 0
    resumed = capsys.readouterr().out
    assert f"== student: resuming at step 3 of 3 from {run / 'student' / 'checkpoint.pt'}" in resumed
    assert "== transfer: 14 of 15 grid cells finished before, resuming the rest" in resumed
    assert "== teacher/depth: skipped" in resumed


def test_teachers_in_a_pool_train_as_one_after_another(world: Path, tmp_path: Path) -> None:
    """``teacher_workers``: each teacher in its own one-thread process gives what the same teacher
    trained alone with one thread gives (the runs are independent), and the pool's configs (progress
    bars off) still count as done for a rerun with bars on."""
    configs = {task: teach_config(world, task) for task in ("classification", "segmentation")}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the pool's workers run one thread each: the same summation order
    try:
        alone = train_teachers(configs, tmp_path / "alone")
    finally:
        torch.set_num_threads(threads)
    pooled = train_teachers(configs, tmp_path / "pooled", workers=2)
    assert set(pooled) == set(configs)
    for task, config in configs.items():
        assert pooled[task]["metrics"] == alone[task]["metrics"] and pooled[task]["metrics"], task
        weights = [load_checkpoint(tmp_path / run / "teachers" / task / "checkpoint.pt")["model"]
                   for run in ("alone", "pooled")]
        assert weights[0].keys() == weights[1].keys()
        assert all(torch.equal(weights[0][name], weights[1][name]) for name in weights[0]), task
        with_bars = dataclasses.replace(config, train=dataclasses.replace(config.train, progress=True))
        assert already_done(tmp_path / "pooled" / "teachers" / task, "teacher.json", with_bars)
        other = dataclasses.replace(config, train=dataclasses.replace(config.train, steps=4))
        with pytest.raises(ConfigError, match="differs in train.steps"):
            already_done(tmp_path / "pooled" / "teachers" / task, "teacher.json", other)
