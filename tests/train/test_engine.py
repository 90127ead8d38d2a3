"""The training engine on a toy two-task problem: loss goes down, reports are written, a run
killed with SIGKILL resumes to the same weights bit for bit, NaN stops the run naming the task,
bf16 autocast runs, accumulation matches one big batch, EMA tracks the weights, and a real
2-process gloo DDP run matches one process with the same global batch, on the toy and on a small
MultiTaskModel with the real classification, segmentation, depth and normals tasks.

The toy task and model live here; subprocesses import this file to run them (see ``main``).
"""

from __future__ import annotations

import itertools
import json
import os
import pickle
import signal
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from must.config import replace
from must.models import ModelConfig, build_model
from must.data.geometry import Geometry
from must.data.loader import ResumableBatchSampler, collate, make_eval_loader, make_loader
from must.data.sample import Batch, Sample, TaskBatch, stack_with_fill
from must.tasks import ClassificationTask, DepthTask, NormalsTask, SegmentationTask
from must.tasks.base import Task
from must.train import checkpoint as checkpoints
from must.train import engine
from must.train.config import TeacherRecipe, TrainConfig, WeightingConfig
from must.train.optim import lr_factor
from must.errors import MustError
from must.train.engine import (NonFiniteLossError, evaluate_tasks, fit, flatten_metrics,
                               resolve_precision, shared_parameters)

HERE = Path(__file__).resolve().parent


class MeanError:
    def __init__(self) -> None:
        self.reset()

    def update(self, output: Tensor, target: TaskBatch) -> None:
        present = target.present.to(output.device)
        self.total += float((output.float() - target.value.to(output.device)).abs()[present].sum())
        self.count += int(present.sum()) * output.shape[-1]

    def compute(self) -> dict[str, float]:
        return {"mae": self.total / max(self.count, 1)}

    def reset(self) -> None:
        self.total, self.count = 0.0, 0


class VectorTask(Task):
    """Regress a 3-vector per image. The loss is the squared error summed over images that have a
    target, divided by the *whole* batch size: then the mean of DDP ranks' losses equals the loss
    of the global batch even when a task is missing from some images."""

    primary_metric = "mae"

    def __init__(self, name: str, poison_at: int | None = None) -> None:
        self.name, self.poison_at, self.calls = name, poison_at, 0

    def loss(self, output: Tensor, target: TaskBatch) -> dict[str, Tensor]:
        self.calls += 1
        error = ((output.float() - target.value) ** 2).sum(dim=-1) * target.present
        loss = error.sum() / len(error)
        if self.calls - 1 == self.poison_at:
            loss = loss * float("nan")
        return {"loss": loss, "mse": error.sum().detach() / target.present.sum().clamp_min(1)}

    def metric(self) -> MeanError:
        return MeanError()

    def transform_target(self, target: Tensor, geometry: Geometry) -> Tensor:
        return target

    def collate(self, targets: list[Tensor | None]) -> TaskBatch:
        return stack_with_fill(targets, 0.0)

    def build_head(self, spec: Any) -> nn.Module: raise NotImplementedError
    def predict(self, output: Any) -> Any: raise NotImplementedError
    def to_pseudo_label(self, prediction: Any, threshold: float | None = None) -> Any: raise NotImplementedError
    def draw(self, image: Any, prediction: Any) -> Any: raise NotImplementedError


class ToyModel(nn.Module):
    """A conv trunk shared by one linear head per task (the MultiTaskModel layout)."""

    def __init__(self, names: tuple[str, ...] = ("a", "b"), dropout: float = 0.0) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                                   nn.Flatten(), nn.Linear(8, 16), nn.ReLU(), nn.Dropout(dropout))
        self.heads = nn.ModuleDict({name: nn.Linear(16, 3) for name in names})
        self.seen_dtype: torch.dtype | None = None

    def forward(self, images: Tensor, targets: dict[str, TaskBatch] | None = None) -> dict[str, Tensor]:
        features = self.trunk(images)
        self.seen_dtype = features.dtype
        return {name: head(features) for name, head in self.heads.items()}


class VectorDataset(torch.utils.data.Dataset):
    """Random images; ``a`` = mean colour, ``b`` = mean colour of the top half (when in ``tasks``)."""

    def __init__(self, count: int, seed: int, tasks: tuple[str, ...] = ("a", "b")) -> None:
        self.count, self.seed, self.tasks = count, seed, tasks

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> Sample:
        generator = torch.Generator().manual_seed(self.seed * 1000 + index)
        image = torch.randint(0, 256, (3, 8, 8), generator=generator, dtype=torch.uint8)
        values = {"a": image.float().mean(dim=(1, 2)) / 255, "b": image[:, :4].float().mean(dim=(1, 2)) / 255}
        return Sample(f"{self.seed}/{index}", image, {t: values[t] for t in self.tasks})


DATASETS = [VectorDataset(8, seed=1, tasks=("a", "b")), VectorDataset(24, seed=2, tasks=("a",))]
FULL_DATASETS = [VectorDataset(16, seed=3)]


def toy_config(**changes: Any) -> TrainConfig:
    base = TrainConfig(steps=12, batch_size=8, lr=0.05, log_every=2, checkpoint_every=4, device="cpu",
                       precision="fp32", progress=False, seed=7, weighting=WeightingConfig(method="equal"))
    return replace(base, **changes)


def _killing(stream: Iterator[Batch], first: int, kill_at: int) -> Iterator[Batch]:
    for index, batch in enumerate(stream, start=first):
        if index == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)  # no clean-up of any kind, as in a crash
        yield batch


def run_toy(out_dir: Path, config: TrainConfig, datasets: list = DATASETS, kill_at: int | None = None,
            dropout: float = 0.0, tasks: list[Task] | None = None, evaluate: bool = False) -> Any:
    torch.manual_seed(0)
    model = ToyModel(dropout=dropout)
    tasks = tasks or [VectorTask("a"), VectorTask("b")]

    def batches_from(first: int) -> Iterator[Batch]:
        stream = make_loader(datasets, tasks, config.micro_batch_size, config.seed, 8, first,
                             scale_range=(0.75, 1.5))
        return stream if kill_at is None else _killing(stream, first, kill_at)

    def run_evaluation(eval_model: nn.Module, step: int) -> dict[str, float]:
        loader = make_eval_loader(datasets, tasks, batch_size=8, output_size=8)
        return flatten_metrics(evaluate_tasks(eval_model, tasks, iter(loader), torch.device("cpu")))

    return fit(model, tasks, batches_from, config, out_dir, evaluate=run_evaluation if evaluate else None)


RESUME_CONFIG = dict(steps=12, accumulate=2, warmup_steps=3, grad_clip=1.0, ema_decay=0.9,
                     weighting=WeightingConfig(method="uncertainty"))


def main(arguments: list[str]) -> None:
    """Entry point of the subprocesses: ``resume OUT [KILL_AT]`` or ``ddp OUT``."""
    torch.set_num_threads(1)
    mode, out = arguments[0], Path(arguments[1])
    if mode == "resume":
        kill_at = int(arguments[2]) if len(arguments) > 2 else None
        run_toy(out, toy_config(**RESUME_CONFIG), kill_at=kill_at, dropout=0.2)
        return
    from must import distributed

    for name, config, datasets in [*DDP_RUNS, DDP_PCGRAD]:
        result = run_toy(out / name, config, datasets)
        torch.save(result.model.state_dict(), out / f"{name}-rank{distributed.rank()}.pt")
    for norm in MULTITASK_NORMS:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model = run_multitask(out / f"multitask-{norm}", norm).model
        state = {"model": model.state_dict(), "warnings": [str(w.message) for w in caught],
                 "batch_norms": sorted({type(m).__name__ for m in model.modules()
                                        if isinstance(m, nn.modules.batchnorm._BatchNorm)})}
        torch.save(state, out / f"multitask-{norm}-rank{distributed.rank()}.pt")
    distributed.teardown()


def _load(path: Path) -> dict[str, Any]:
    return checkpoints.load(path)


def _assert_states_equal(first: Any, second: Any) -> None:
    if isinstance(first, Tensor):
        assert torch.equal(first, second)
    elif isinstance(first, dict):
        assert first.keys() == second.keys()
        for key in first:
            _assert_states_equal(first[key], second[key])
    elif isinstance(first, (list, tuple)):
        assert len(first) == len(second)
        for a, b in zip(first, second):
            _assert_states_equal(a, b)
    else:
        assert first == second


def test_loss_decreases_and_reports_are_written(tmp_path: Path) -> None:
    config = toy_config(steps=40, lr=0.1, log_every=5, checkpoint_every=20, eval_every=20)
    result = run_toy(tmp_path, config, evaluate=True)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if "loss" in r]
    assert [r["step"] for r in train] == list(range(5, 41, 5))
    assert train[-1]["loss"] < 0.5 * train[0]["loss"]
    assert {"lr", "loss/a", "loss/b", "loss/a/mse", "weight/a", "images_per_second"} <= set(train[0])
    assert train[0]["lr"] == pytest.approx(0.1 * lr_factor(4, 0, 40))  # the rate step 5 used
    assert train[-1]["lr"] < train[0]["lr"]  # cosine decay
    evaluations = [r for r in records if "eval/a/mae" in r]
    assert [r["step"] for r in evaluations] == [20, 40] and "eval/b/mae" in evaluations[0]
    assert result.evaluation["a/mae"] == evaluations[-1]["eval/a/mae"]
    assert list((tmp_path / "events").glob("events.out.tfevents.*"))
    assert result.step == 40 and _load(result.checkpoint)["step"] == 40


@pytest.mark.slow
def test_sigkill_then_resume_gives_bitwise_identical_state(tmp_path: Path) -> None:
    reference = run_toy(tmp_path / "reference", toy_config(**RESUME_CONFIG), dropout=0.2)
    command = [sys.executable, "-c", f"import sys; sys.path.insert(0, {str(HERE)!r}); "
               "import test_engine; test_engine.main(sys.argv[1:])", "resume", str(tmp_path / "killed")]
    killed = subprocess.run([*command, "21"], capture_output=True, text=True, timeout=300)  # step 11
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert _load(tmp_path / "killed" / "checkpoint.pt")["step"] == 8
    resumed = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    expected, actual = _load(reference.checkpoint), _load(tmp_path / "killed" / "checkpoint.pt")
    for key in ("step", "model", "ema", "optimizer", "scheduler", "weighting"):
        _assert_states_equal(expected[key], actual[key])
    steps = [json.loads(line)["step"] for line in (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [2, 4, 6, 8, 10, 12]  # the killed run's step-10 record was dropped, then rewritten
    again = run_toy(tmp_path / "reference", toy_config(**RESUME_CONFIG), dropout=0.2)
    assert again.resumed_from == 12 and again.step == 12  # a finished run does nothing more
    _assert_states_equal(again.model.state_dict(), expected["model"])


def test_resuming_with_another_config_warns_and_continues(tmp_path: Path) -> None:
    run_toy(tmp_path, toy_config(steps=4))
    with pytest.warns(UserWarning, match="different config: lr, steps"):
        result = run_toy(tmp_path, toy_config(steps=6, lr=0.01))
    assert result.resumed_from == 4 and result.step == 6


def test_non_finite_loss_stops_naming_task_and_step_and_keeps_checkpoint(tmp_path: Path) -> None:
    tasks = [VectorTask("a"), VectorTask("b", poison_at=None)]
    tasks[0].poison_at = 5  # "a" is in every batch: its 6th loss is step 6's
    with pytest.raises(NonFiniteLossError, match=r"task\(s\) 'a' at step 6") as error:
        run_toy(tmp_path, toy_config(checkpoint_every=2), tasks=tasks)
    assert error.value.tasks == ["a"] and error.value.step == 6
    assert _load(tmp_path / "checkpoint.pt")["step"] == 4
    # a transfer cell's worker process pickles it to the parent, which prints it as one line
    copy = pickle.loads(pickle.dumps(error.value))
    assert isinstance(copy, MustError) and str(copy) == str(error.value) and copy.step == 6


def test_bf16_autocast_trains(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for key in [key for key in os.environ if key.startswith("MUST_WARNED_")]:
        monkeypatch.delenv(key)  # the warning comes once per run
    with pytest.warns(UserWarning, match="bf16 autocast on CPU"):
        result = run_toy(tmp_path, toy_config(steps=4, precision="bf16"))
    assert result.model.seen_dtype == torch.bfloat16
    assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in result.model.parameters())
    assert _load(result.checkpoint)["precision"] == "bf16"
    assert resolve_precision("fp32", torch.device("cpu")) == "fp32"
    assert resolve_precision("auto", torch.device("cpu")) == "fp32"  # see resolve_precision


def _pool_batches(first: int, micro: int) -> Iterator[Batch]:
    """Batch ``i`` = items ``[i * micro, (i + 1) * micro)`` of a fixed pool, no augmentation."""
    pool = [FULL_DATASETS[0][i] for i in range(len(FULL_DATASETS[0]))]
    tasks = [VectorTask("a"), VectorTask("b")]
    index = first
    while True:
        items = [pool[(index * micro + k) % len(pool)] for k in range(micro)]
        yield collate(items, tasks)
        index += 1


def test_accumulating_two_halves_equals_one_batch(tmp_path: Path) -> None:
    results, initial = [], []
    for accumulate in (1, 2):
        config = toy_config(steps=5, accumulate=accumulate, checkpoint_every=0)
        torch.manual_seed(0)
        model = ToyModel()
        # cloned before fit, which trains this very module in place
        initial.append({name: value.clone() for name, value in model.state_dict().items()})
        results.append(fit(model, [VectorTask("a"), VectorTask("b")],
                           lambda first, c=config: _pool_batches(first, c.micro_batch_size),
                           config, tmp_path / str(accumulate)).model)
    _assert_states_equal(initial[0], initial[1])  # both runs start from the same weights
    for name, value in results[0].state_dict().items():
        assert torch.allclose(value, results[1].state_dict()[name], atol=1e-6)
        assert not torch.allclose(value, initial[0][name], atol=1e-4), name  # both runs trained


def test_ema_differs_from_and_tracks_the_weights(tmp_path: Path) -> None:
    torch.manual_seed(0)
    initial = ToyModel().state_dict()
    result = run_toy(tmp_path / "ema", toy_config(steps=10, ema_decay=0.8, checkpoint_every=0))
    raw, ema = result.model.state_dict(), result.ema.state_dict()
    distance = lambda a, b: sum(float((a[k] - b[k]).norm()) for k in a)  # noqa: E731
    assert distance(raw, ema) > 0
    assert distance(raw, ema) < distance(raw, initial)
    copy = run_toy(tmp_path / "copy", toy_config(steps=10, ema_decay=0.0, checkpoint_every=0))
    _assert_states_equal(copy.ema.state_dict(), copy.model.state_dict())  # decay 0: the weights


@pytest.mark.parametrize("method", ["must", "equal", "uncertainty", "pcgrad"])
def test_every_weighting_method_trains(tmp_path: Path, method: str) -> None:
    teachers = {"a": TeacherRecipe(16, 0.1), "b": TeacherRecipe(4, 0.05)}
    config = toy_config(steps=3, checkpoint_every=0, weighting=WeightingConfig(method=method, teachers=teachers))
    result = run_toy(tmp_path, config)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert all(torch.isfinite(p).all() for p in result.model.parameters())
    expected_a = {"must": 8 * 0.1 / (16 * 0.05), "uncertainty": None}.get(method, 1.0)
    if expected_a is not None:
        assert records[-1]["weight/a"] == pytest.approx(expected_a)
    else:
        assert records[-1]["weight/a"] != 1.0  # learned


def test_evaluate_tasks_against_a_manual_mean_error() -> None:
    tasks = [VectorTask("a"), VectorTask("b")]
    batches = list(itertools.islice(_pool_batches(0, 4), 3))
    batches[1].targets.pop("b")  # "b" seen in two batches only
    model = ToyModel().train()
    results = evaluate_tasks(model, tasks, batches, torch.device("cpu"))
    assert model.training  # mode restored
    model.eval()
    with torch.no_grad():
        errors = {name: [(model(b.images)[name] - b.targets[name].value).abs() for b in batches if name in b.targets]
                  for name in ("a", "b")}
    for name, parts in errors.items():
        assert results[name]["mae"] == pytest.approx(float(torch.cat(parts).mean()))
    assert flatten_metrics(results) == {"a/mae": results["a"]["mae"], "b/mae": results["b"]["mae"]}


def test_sync_bn_converts_batch_norm_only_under_ddp_on_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    tasks = {"classification": ClassificationTask(4)}
    model = build_model(ModelConfig(width=0.25, fpn_channels=16, sync_bn=True), tasks)
    assert not build_model(ModelConfig(width=0.25, fpn_channels=16), tasks).sync_bn  # off by default
    parameters, keys = [id(p) for p in model.parameters()], list(model.state_dict())
    assert engine.sync_batch_norm(model, torch.device("cuda")) is model  # one process: nothing to sync
    assert not any(isinstance(m, nn.SyncBatchNorm) for m in model.modules())
    monkeypatch.setattr(engine.distributed, "world_size", lambda: 2)
    for key in [key for key in os.environ if key.startswith("MUST_WARNED_")]:
        monkeypatch.delenv(key)  # the warning comes once per run
    with pytest.warns(UserWarning, match="SyncBatchNorm runs on GPUs only"):
        assert engine.sync_batch_norm(model, torch.device("cpu")) is model
    assert not any(isinstance(m, nn.SyncBatchNorm) for m in model.modules())
    # converting needs no GPU (only running it does)
    converted = engine.sync_batch_norm(model, torch.device("cuda"))
    batch_norms = [m for m in converted.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert batch_norms and all(isinstance(m, nn.SyncBatchNorm) for m in batch_norms)
    assert [id(p) for p in converted.parameters()] == parameters  # the optimizer's references hold
    assert list(converted.state_dict()) == keys  # checkpoints keep their layout
    plain = build_model(ModelConfig(width=0.25, fpn_channels=16), tasks)
    assert not any(isinstance(m, nn.SyncBatchNorm) for m in engine.sync_batch_norm(plain, torch.device("cuda")).modules())


def test_shared_parameters_are_the_trunk() -> None:
    model = ToyModel()
    assert {id(p) for p in shared_parameters(model)} == {id(p) for p in model.trunk.parameters()}


class MultiTaskDataset(torch.utils.data.Dataset):
    """Random 32-px images with a target for every task at every pixel (so no image or pixel is
    left out of any loss): a class from the mean colour, segments where red > green, depth and
    normals from the colours."""

    def __init__(self, count: int) -> None:
        self.count = count

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> Sample:
        image = torch.randint(0, 256, (3, 32, 32), generator=torch.Generator().manual_seed(index), dtype=torch.uint8)
        colours = image.float() / 255
        normals = colours - 0.5
        normals[2] = normals[2].abs() + 0.1  # never the zero vector: every pixel is valid
        targets = {"classification": torch.tensor(int(colours.mean() * 40) % 4),
                   "segmentation": (colours[0] > colours[1]).long() + (colours[2] > 0.5).long(),
                   "depth": 1.0 + 4.0 * colours.mean(dim=0),
                   "normals": normals / normals.norm(dim=0, keepdim=True)}
        return Sample(f"multitask/{index}", image, targets)


MULTITASK_NORMS = ("group", "batch")
MULTITASK_CONFIG = toy_config(steps=3, batch_size=8, lr=0.02, checkpoint_every=0, seed=5)


def run_multitask(out_dir: Path, norm: str) -> Any:
    """A demo-like student (ResNet-18 at width 1/4, FPN, four heads) trained for 3 steps with
    ``model.sync_bn`` on. Scale jitter in [1, 1.5] crops but never pads, so every pixel of every
    image carries every target: each loss, a mean over images or pixels, then averages over ranks
    to the loss of the global batch, as DDP's gradient average assumes."""
    tasks = {"classification": ClassificationTask(4), "segmentation": SegmentationTask(3),
             "depth": DepthTask(), "normals": NormalsTask()}
    torch.manual_seed(0)
    model = build_model(ModelConfig(width=0.25, fpn_channels=16, norm=norm, sync_bn=True), tasks)
    config, datasets = MULTITASK_CONFIG, [MultiTaskDataset(16)]

    def batches_from(first: int) -> Iterator[Batch]:
        return make_loader(datasets, tasks, config.micro_batch_size, config.seed, 32, first, scale_range=(1.0, 1.5))

    return fit(model, tasks, batches_from, config, out_dir)


DDP_RUNS = [
    # a task missing from some ranks' batches (heads unused there: find_unused_parameters)
    ("partial", toy_config(steps=6, checkpoint_every=3, seed=11, weighting=WeightingConfig(method="equal")),
     DATASETS),
    # learned loss weights live outside DDP: their gradients are averaged by the weighting
    ("uncertainty", toy_config(steps=6, checkpoint_every=0, seed=11,
                               weighting=WeightingConfig(method="uncertainty")), FULL_DATASETS),
]
# PCGrad projects per process, so it cannot match one process; its ranks must still agree
DDP_PCGRAD = ("pcgrad", toy_config(steps=4, checkpoint_every=0, weighting=WeightingConfig(method="pcgrad")),
              DATASETS)


@pytest.fixture(scope="module")
def two_process_runs(tmp_path_factory: pytest.TempPathFactory, run_torchrun) -> Path:
    """One torchrun launch (2 gloo processes) for every DDP check of this file: the directory
    holding each run's outputs and each rank's final weights."""
    directory = tmp_path_factory.mktemp("ddp")
    script = (f"import sys; sys.path.insert(0, {str(HERE)!r}); import test_engine; "
              "test_engine.main(sys.argv[1:])")
    (directory / "script.py").write_text(script)
    run_torchrun(directory / "script.py", "ddp", directory, timeout=600)
    return directory


@pytest.mark.slow
def test_two_process_gloo_ddp_matches_one_process(two_process_runs: Path, tmp_path: Path) -> None:
    name, config, datasets = DDP_RUNS[0]
    sampler = ResumableBatchSampler([len(d) for d in datasets], config.batch_size // 2, config.seed,
                                    rank=1, world_size=2)  # the scenario the first run is meant to test
    assert any(all(d == 1 for d, _, _ in sampler.batch(step)) for step in range(config.steps))
    for name, config, datasets in DDP_RUNS:
        single = run_toy(tmp_path / f"single-{name}", config, datasets).model.state_dict()
        distributed = torch.load(two_process_runs / f"{name}-rank0.pt")
        for key, value in single.items():
            assert torch.allclose(value, distributed[key], atol=1e-5), (name, key)
    ranks = [torch.load(two_process_runs / f"pcgrad-rank{rank}.pt") for rank in range(2)]
    _assert_states_equal(ranks[0], ranks[1])
    records = (two_process_runs / "partial" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["step"] for r in records] == [2, 4, 6]  # rank 0 only
    assert _load(two_process_runs / "partial" / "checkpoint.pt")["world_size"] == 2


@pytest.mark.slow
def test_two_process_multitask_model_matches_one_process(two_process_runs: Path, tmp_path: Path) -> None:
    """The real model and tasks (FPN, pixel heads, unused-parameter search) under DDP. GroupNorm
    normalizes each image alone, so 2 processes x 4 images must equal 1 process x 8 images: the
    only difference is the order of float sums (two half-batch gradients averaged vs one batch),
    a few 1e-7 in the weights after 3 steps; 1e-5 bounds that with margin, while a wrong average
    over ranks moves weights by ~1e-2, as per-process BatchNorm statistics do (a 4-image vs an
    8-image batch). BatchNorm couples the images of a batch: on CPU
    torch has no SyncBatchNorm, so ``sync_bn`` leaves each process its own statistics (with a
    warning) and that run only has to keep its ranks in agreement; on GPUs it converts."""
    ranks = {norm: [torch.load(two_process_runs / f"multitask-{norm}-rank{rank}.pt") for rank in range(2)]
             for norm in MULTITASK_NORMS}
    single = run_multitask(tmp_path / "single", "group").model.state_dict()
    for key, value in single.items():
        if value.is_floating_point():
            torch.testing.assert_close(ranks["group"][0]["model"][key], value, rtol=1e-5, atol=1e-5, msg=key)
    for norm in MULTITASK_NORMS:  # DDP kept the replicas' weights equal (BN running statistics
        # are each rank's own since the last forward: DDP broadcasts rank 0's at the next one)
        first, second = ({k: v for k, v in rank["model"].items() if "running_" not in k} for rank in ranks[norm])
        _assert_states_equal(first, second)
    batch_norm = ranks["batch"][0]
    assert batch_norm["batch_norms"] == ["BatchNorm2d"]  # not converted on CPU ...
    assert any("SyncBatchNorm runs on GPUs only" in message for message in batch_norm["warnings"])  # ... said once
    assert not any("SyncBatchNorm" in message for message in ranks["group"][0]["warnings"])  # nothing to sync


def test_sync_bn_keeps_the_activation_of_timm_norm_layers(monkeypatch: pytest.MonkeyPatch) -> None:
    """timm trunks fuse BatchNorm and activation in one layer (BatchNormAct2d): converted with
    torch's own converter it becomes a plain SyncBatchNorm that drops the activation; timm's
    converter keeps it, so the converted trunk computes what it computed before (eval mode)."""
    tasks = {"segmentation": SegmentationTask(3)}
    model = build_model(ModelConfig(backbone="timm:efficientnet_b0", fpn_channels=16, sync_bn=True), tasks).eval()
    images = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        before = model.backbone(images)
    monkeypatch.setattr(engine.distributed, "world_size", lambda: 2)
    converted = engine.sync_batch_norm(model, torch.device("cuda")).eval()
    assert any(isinstance(module, nn.SyncBatchNorm) for module in converted.modules())
    with torch.no_grad():
        after = converted.backbone(images)
    for name in before:
        torch.testing.assert_close(after[name], before[name], rtol=0, atol=0)
