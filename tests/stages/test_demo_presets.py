"""The shipped presets load and resolve: demo, study (Tables 2-5 rows, the lr x steps grid), paper
(real datasets, no world, the supplementary's settings) and tiny (the test suite's sizes); student
variants get the sources their table needs."""

import dataclasses
from pathlib import Path

import pytest
import torch

from must import config as config_lib
from must.stages.demo import (DemoConfig, StudentVariant, label_config, pool_set, run_demo, student_config,
                              teach_configs, transfer_inits, with_grid)
from must.transfer.config import default_suite


@pytest.mark.parametrize("preset", ["demo", "study", "paper", "tiny"])
def test_presets_load_and_resolve(preset: str, tmp_path: Path) -> None:
    config = config_lib.load(DemoConfig, preset, [])
    inits = transfer_inits(config, tmp_path)
    assert {"scratch", "supervised", "must"} <= set(inits) and inits["scratch"] is None
    assert set(teach_configs(config, tmp_path / "data")) == {"classification", "detection", "segmentation", "depth"}
    student = student_config(config, tmp_path)
    assert [Path(p).name for p in student.teachers] == list(config.teachers)


def test_study_has_every_table_row(tmp_path: Path) -> None:
    config = config_lib.load(DemoConfig, "study", [])
    inits = transfer_inits(config, tmp_path)
    assert {"simclr", "doersch", "teacher_depth", "supervised_multitask_pseudo", "must_cls_depth_seg"} <= set(inits)
    methods = ("byol", "mocov2", "mocov3", "dino", "barlow_twins", "vicreg", "simsiam", "mae")  # lightly's
    assert set(methods) <= set(inits)
    for method in methods:
        assert config.pretrain[method].method == method and inits[method].endswith(f"{method}/checkpoint.pt")
    assert inits["must_cls_depth"] == str(tmp_path / "students" / "must_cls_depth" / "checkpoint.pt")
    grid = with_grid(config.transfer, default_suite(tmp_path / "world", None))
    assert grid["depth"].lrs == (0.02, 0.05) and grid["depth"].steps == (200, 400)


def test_paper_reads_real_datasets_only(tmp_path: Path) -> None:
    config = config_lib.load(DemoConfig, "paper", [])
    assert config.world.splits == {} and config.model.backbone == "resnet152" and config.image_size == 640
    teach = teach_configs(config, tmp_path / "data")
    assert teach["detection"].data.format == "coco" and teach["depth"].val.root == "/data/midas/val"
    assert student_config(config, tmp_path).sources[0].data.root == "/data/imagenet/train"


def test_student_variants_pick_their_sources(tmp_path: Path) -> None:
    config = config_lib.load(DemoConfig, "demo", [])
    ladder = student_config(config, tmp_path, StudentVariant(tasks=("classification", "depth")))
    assert len(ladder.sources) == 1 and set(ladder.val) == {"classification", "depth"}
    table5 = student_config(config, tmp_path, StudentVariant(pool=False, labeled=True, pseudo_on_labeled=True))
    assert len(table5.sources) == 4
    assert {s.data.tasks for s in table5.sources} == {("classification",), ("detection",), ("segmentation",), ("depth",)}
    assert all(len(s.pseudo) == 1 for s in table5.sources)
    with pytest.raises(ValueError, match="pool=true or labeled=true"):
        StudentVariant(pool=False)
    smaller, full = student_config(config, tmp_path, StudentVariant(pool_images=1000)), student_config(config, tmp_path)
    assert smaller.sources[0].data.limit == 1000 and full.sources[0].data.limit is None
    assert smaller.sources[0].pseudo == full.sources[0].pseudo
    with pytest.raises(ValueError, match="pool_images needs"):
        StudentVariant(pool_images=0)
    with pytest.raises(config_lib.ConfigError, match="unknown task"):
        student_config(config, tmp_path, StudentVariant(tasks=("normals",)))


def test_a_student_variant_can_change_the_loss_weighting_only(tmp_path: Path) -> None:
    config = config_lib.load(DemoConfig, "demo", [])
    main, upgrad = student_config(config, tmp_path), student_config(config, tmp_path, StudentVariant(weighting="upgrad"))
    assert main.train.weighting.method == "must" and upgrad.train.weighting.method == "upgrad"
    assert dataclasses.replace(upgrad.train, weighting=main.train.weighting) == main.train
    with pytest.raises(config_lib.ConfigError, match="unknown weighting 'gradvac'"):
        StudentVariant(weighting="gradvac")
    study = config_lib.load(DemoConfig, "study", [])
    assert {variant.weighting for variant in study.students.values()} >= {"equal", "uncertainty", "pcgrad", "upgrad",
                                                                          "nash_mtl", "famo", "dwa"}


def test_precision_overrides_every_training_stage(tmp_path: Path) -> None:
    default = config_lib.load(DemoConfig, "demo", [])
    assert default.precision == "bf16"  # the demo trains in bf16 (README: measured)
    assert {teach.train.precision for teach in teach_configs(default, tmp_path).values()} == {"bf16"}
    assert student_config(default, tmp_path).train.precision == "bf16"
    config = config_lib.load(DemoConfig, "demo", ["precision=fp32"])
    assert {teach.train.precision for teach in teach_configs(config, tmp_path).values()} == {"fp32"}
    assert student_config(config, tmp_path).train.precision == "fp32"
    kept = config_lib.load(DemoConfig, "demo", ["precision=auto"])
    assert student_config(kept, tmp_path).train.precision == kept.student.train.precision == "auto"


def test_device_overrides_every_stage(tmp_path: Path) -> None:
    default = config_lib.load(DemoConfig, "demo", [])
    assert default.device == "auto" and student_config(default, tmp_path).train.device == "auto"
    config = config_lib.load(DemoConfig, "demo", ["device=cpu"])
    assert {teach.train.device for teach in teach_configs(config, tmp_path).values()} == {"cpu"}
    assert student_config(config, tmp_path).train.device == "cpu"
    assert label_config(config, tmp_path, pool_set(config, tmp_path)).device == "cpu"
    assert config.precision == "bf16" and student_config(config, tmp_path).train.precision == "bf16"  # kept


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_a_cuda_demo_without_a_gpu_stops_before_any_stage(tmp_path: Path) -> None:
    with pytest.raises(config_lib.ConfigError, match="device 'cuda': no CUDA GPU is visible"):
        run_demo("demo", tmp_path / "run", ["device=cuda"])
    assert not (tmp_path / "run").exists()


def test_paper_follows_the_supplementary(tmp_path: Path) -> None:
    """MuST supp. sec. 2.1-2.3: VOC 2007+2012 trainval / VOC 2007 test for detection transfer,
    detection on P3-P7, and each task's own input size."""
    config = config_lib.load(DemoConfig, "paper", [])
    detection = config.transfer.tasks["detection"]
    assert (detection.train.root, detection.train.split) == ("/data/VOCdevkit/VOC2007", "trainval")
    assert [(d.root, d.split) for d in detection.more_train] == [("/data/VOCdevkit/VOC2012", "trainval")]
    assert (detection.test.root, detection.test.split) == ("/data/VOCdevkit/VOC2007", "test")
    levels = ["p3", "p4", "p5", "p6", "p7"]
    assert list(detection.task_options["levels"]) == list(config.teachers["detection"].task_options["levels"]) == levels
    sizes = {name: task.image_size for name, task in config.transfer.tasks.items()}
    assert sizes == {"classification": 256, "detection": 896, "segmentation": 512, "depth": 640, "normals": 768}
    teachers = {task: teach.image_size for task, teach in teach_configs(config, tmp_path).items()}
    assert teachers == {"classification": 224, "detection": 640, "segmentation": 896, "depth": 640}
    assert config.image_size == 640  # the student (supp. sec. 2.2)


def test_tiny_preset_shrinks_the_default_suite(tmp_path: Path) -> None:
    from must.transfer.config import with_settings

    config = config_lib.load(DemoConfig, "tiny", [])
    assert config.fashion_mnist is None and config.model.width == 0.125 and config.image_size == 32
    suite = with_settings(default_suite(tmp_path, config.fashion_mnist), config.transfer.every_task)
    assert {(t.image_size, t.lrs, t.steps, t.batch_size) for t in suite.values()} == {(32, (0.05,), (4,), 8)}
    assert suite["classification"].substitutes == "fashion_mnist"
    with pytest.raises(config_lib.ConfigError, match="every_task: unknown setting.*image_sise"):
        config_lib.load(DemoConfig, "tiny", ["transfer.every_task.image_sise=3"])


def test_a_row_can_change_its_model_and_transfer_settings(tmp_path: Path) -> None:
    """The study's MAE row pre-trains and transfers a ViT trunk at its own learning rate, beside its
    from-scratch reference; every other row keeps the preset's model and suite."""
    from must.stages.demo import pretrain_config
    from must.stages.demo.pipeline import transfer_configs

    config = config_lib.load(DemoConfig, "study", ["fashion_mnist=null"])
    vit = "timm:vit_tiny_patch16_224"
    assert pretrain_config(config, tmp_path, "mae").model.backbone == vit
    assert pretrain_config(config, tmp_path, "simclr").model == config.model
    assert config.row_model("mae").width == config.model.width  # only the named keys change
    transfers = {transfer.init_name: transfer for transfer in transfer_configs(config, tmp_path)}
    assert transfers["scratch_vit"].init is None
    for name in ("mae", "scratch_vit"):
        assert transfers[name].model.backbone == vit
        assert {task.lrs for task in transfers[name].tasks.values()} == {(0.004, 0.01)}  # x the grid's 0.4, 1
    assert transfers["simclr"].model.backbone == config.model.backbone == "resnet18"
    assert transfers["simclr"].tasks == transfers["scratch"].tasks and transfers["simclr"].tasks["depth"].lrs == (0.02, 0.05)


@pytest.mark.parametrize("override, message", [
    ("rows.must={model: {backbone: resnet50}}", "rows.must: only a pre-training"),
    ("rows.mae={model: {bakcbone: resnet50}}", r"unknown setting\(s\) \['bakcbone'\]"),
    ("rows.mae={transfer: {lr: 0.1}}", r"unknown setting\(s\) \['lr'\]"),
    ("rows.mae={model: {width: wide}}", "rows.mae.model"),
])
def test_a_wrong_row_is_refused_by_name(override: str, message: str) -> None:
    with pytest.raises(config_lib.ConfigError, match=message):
        config_lib.load(DemoConfig, "study", [override])


def test_every_example_of_the_help_is_a_valid_config() -> None:
    import shlex

    from must.stages.demo import EXAMPLES

    commands = [shlex.split(command) for command in EXAMPLES.replace("\\\n", " ").splitlines()
                if command.strip().startswith("must demo")]
    assert len(commands) == 4
    for command in commands:
        overrides = [word for word in command[2:] if "=" in word]
        config = config_lib.load(DemoConfig, "demo", overrides)
        assert set(config.transfer.inits) <= set(transfer_inits(config, Path("run"))), command
