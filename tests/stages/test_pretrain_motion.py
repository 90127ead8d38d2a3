"""``must pretrain`` with motion segmentation (Doersch & Zisserman 2017 sec. 2) on the world's
video clips: alone (``--method motion_segmentation --data video:DIR``) and as the fourth head of
``multi``, alternating (one head per iteration, a cycle per update, sec. 3) and jointly; images
without motion masks are refused before anything is written."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from must.cli import main
from must.config import ConfigError
from must.data.readers import DatasetConfig
from must.models import ModelConfig
from must.stages.pretrain import RECORD_NAME, PretrainConfig, run_pretrain
from must.train.config import TrainConfig
from must.world import generate, generate_clips

TINY = ModelConfig(backbone="resnet18", width=0.125, fpn_channels=16)
FOUR = ("relative_position", "colorization", "exemplar", "motion_segmentation")
OPTIONS = {"motion_segmentation": {"view_size": 32, "hidden_dim": 16}, "colorization": {"view_size": 32},
           "relative_position": {"view_size": 32, "patch_size": 9, "gap": 1, "jitter": 1}}


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_clips("video", tmp_path_factory.mktemp("pretrain_video") / "clips", count=3,
                          size=32, seed=0, frames=3, progress=False)


def config(data: DatasetConfig, method: str, **changes) -> PretrainConfig:
    train = TrainConfig(steps=2, batch_size=4, lr=0.05, log_every=1, progress=False, device="cpu")
    return PretrainConfig(method=method, data=data, model=TINY, train=train, image_size=32, **changes)


def test_motion_segmentation_alone_from_the_command_line(clips: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "motion"
    code = main(["pretrain", "--method", "motion_segmentation", "--data", f"video:{clips}", "--out", str(out),
                 "image_size=32", "model.backbone=resnet18", "model.width=0.125", "model.fpn_channels=16",
                 "train.steps=2", "train.batch_size=4", "train.progress=false", "train.device=cpu",
                 "task_options.motion_segmentation.view_size=32"])
    assert code == 0, capsys.readouterr().err
    record = json.loads((out / RECORD_NAME).read_text())
    assert record["method"] == "motion_segmentation" and record["steps"] == 2
    assert math.isfinite(record["losses"]["loss/motion_segmentation"])
    state = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=False)
    assert any(key.startswith("heads.motion_segmentation.") for key in state["model"])


@pytest.mark.parametrize("schedule", ["alternate", "joint"])
def test_four_task_doersch_trains_every_head(clips: Path, tmp_path: Path, schedule: str) -> None:
    data = DatasetConfig(format="video", root=str(clips))
    out = tmp_path / schedule
    run_pretrain(config(data, "multi", tasks=FOUR, schedule=schedule, task_options=OPTIONS), out)
    state = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=False)
    # alternating: one optimizer update accumulates one iteration per head (D&Z sec. 3)
    assert state["config"]["accumulate"] == (4 if schedule == "alternate" else 1)
    losses = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    logged = [entry for entry in losses if "loss" in entry]
    assert logged and all(math.isfinite(logged[-1][f"loss/{task}"]) for task in FOUR)
    assert {key.split(".")[1] for key in state["model"] if key.startswith("heads.")} == set(FOUR)


def test_images_without_motion_masks_are_refused(tmp_path: Path) -> None:
    world = generate("scenes", tmp_path / "scenes", count=2, size=32, seed=0, progress=False)
    for method, tasks in (("motion_segmentation", ()), ("multi", FOUR)):
        with pytest.raises(ConfigError, match="motion masks derived from video.*video:DIR"):
            run_pretrain(config(DatasetConfig(format="world", root=str(world)), method, tasks=tasks),
                         tmp_path / method)
        assert not (tmp_path / method).exists()


def test_frames_mixed_with_still_images(clips: Path, tmp_path: Path) -> None:
    """``more_data``: still images (no masks, so no motion views) and the clips' frames in one
    stream, as Doersch & Zisserman train the image tasks on images and motion segmentation on video."""
    stills = generate("scenes", tmp_path / "scenes", count=4, size=32, seed=0, progress=False)
    out = tmp_path / "mixed"
    run_pretrain(config(DatasetConfig(format="world", root=str(stills)), "multi", tasks=FOUR, schedule="joint",
                        task_options=OPTIONS, more_data=(DatasetConfig(format="video", root=str(clips)),)), out)
    record = json.loads((out / RECORD_NAME).read_text())
    assert record["tasks"]["exemplar"]["num_instances"] == 4 + 9  # one class per image of the union
    assert all(math.isfinite(record["losses"][f"loss/{task}"]) for task in FOUR)


def test_study_preset_trains_doersch4_on_the_worlds_clips(tmp_path: Path) -> None:
    from must import config as config_lib
    from must.stages.demo import DemoConfig, pretrain_config, transfer_inits

    study = config_lib.load(DemoConfig, "study", [])
    assert "video" in study.world.splits and "doersch4" in transfer_inits(study, tmp_path)
    four = pretrain_config(study, tmp_path, "doersch4")
    assert four.task_names == FOUR and four.data.root == str(tmp_path / "data" / "pool" / "train" / "images")
    assert four.more_data == (DatasetConfig(format="video", root=str(tmp_path / "data" / "video" / "train")),)
    assert pretrain_config(study, tmp_path, "doersch").more_data == ()


DDP_SCRIPT = '''
import sys
from pathlib import Path
from must.data.readers import DatasetConfig
from must.models import ModelConfig
from must.stages.pretrain import PretrainConfig, run_pretrain
from must.train.config import TrainConfig

stills, clips, out = sys.argv[1:4]
train = TrainConfig(steps=4, batch_size=4, lr=0.05, log_every=1, progress=False, device="cpu")
config = PretrainConfig(method="multi", tasks=("colorization", "motion_segmentation"), schedule="joint",
                        data=DatasetConfig(format="world", root=stills),
                        more_data=(DatasetConfig(format="video", root=clips, limit=2),),
                        task_options={"colorization": {"view_size": 32},
                                      "motion_segmentation": {"view_size": 64, "hidden_dim": 16}},  # C5 2x2: one view per rank is fine
                        model=ModelConfig(backbone="resnet18", width=0.125, fpn_channels=16), train=train,
                        image_size=32)
run_pretrain(config, Path(out))
'''


def test_two_processes_when_a_rank_sees_no_frame(clips: Path, tmp_path: Path, run_torchrun) -> None:
    """Joint training on 12 stills + 2 frames in 2 gloo processes: some rank batches hold no frame,
    so motion segmentation's head is unused there, and DDP runs with find_unused_parameters."""
    stills = generate("scenes", tmp_path / "scenes", count=12, size=32, seed=0, progress=False)
    script = tmp_path / "pretrain_ddp.py"
    script.write_text(DDP_SCRIPT)
    run_torchrun(script, stills, clips, tmp_path / "out")
    record = json.loads((tmp_path / "out" / RECORD_NAME).read_text())
    assert record["steps"] == 4
