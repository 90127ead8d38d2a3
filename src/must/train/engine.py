"""The one training loop: teachers, the multi-task student, transfer and
self-supervised pre-training all call :func:`fit`.

Per optimizer step: ``accumulate`` micro-batches, each ``model(images, targets)`` -> per-task
``task.loss`` -> non-finite check -> ``weighting.backward`` (MuST sec. 3.3 loss balancing); then
gradient sync of what DDP does not see, clipping, optimizer, cosine schedule, the modules'
``after_optimizer_step(step, steps)`` hooks (momentum encoders), EMA. Every
``checkpoint_every`` steps the whole state is written atomically; starting again with the same
command resumes from it exactly (same weights bit for bit on CPU).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from timm.layers import convert_sync_batchnorm
from torch import Tensor, nn

from must import distributed
from must.config import to_dict
from must.data.loader import derive_seed
from must.data.sample import Batch
from must.errors import ConfigError, MustError
from must.files import CHECKPOINT_NAME
from must.tasks.base import Task, by_name
from must.train import checkpoint as checkpoints
from must.train.config import TrainConfig
from must.train.optim import build_ema, build_optimizer, build_scheduler
from must.train.parameter_use import reaches_every_parameter
from must.train.run_logger import RunLogger, warn_once_per_run
from must.train.weighting import Weighting, build_weighting

Precision = Literal["fp32", "bf16"]
Evaluate = Callable[[nn.Module, int], Mapping[str, float]]



class NonFiniteLossError(MustError, RuntimeError):
    """A task's loss became NaN or infinite; the run stops and keeps its last good checkpoint. A
    setting causes it (most often a learning rate too high for the model), so the command line
    prints it as one line."""

    def __init__(self, tasks: Sequence[str], step: int, checkpoint: Path) -> None:
        kept = f"the last good checkpoint is {checkpoint}" if checkpoint.exists() else "no checkpoint was written yet"
        super().__init__(f"non-finite loss for task(s) {', '.join(repr(t) for t in tasks)} at step {step} "
                         f"(a learning rate too high for this model?); {kept}")
        self.tasks, self.step, self.checkpoint = list(tasks), step, checkpoint

    def __reduce__(self) -> tuple:
        """Picklable with its arguments: a transfer cell's worker process hands it to the parent."""
        return type(self), (self.tasks, self.step, self.checkpoint)


@dataclass
class FitResult:
    step: int
    """Optimizer steps completed."""
    model: nn.Module
    """The trained model (not DDP-wrapped)."""
    ema: nn.Module | None
    """The weight average (``ema_decay`` set), else None."""
    checkpoint: Path
    resumed_from: int | None
    """Step of the checkpoint this call started from, None for a fresh run."""
    losses: dict[str, float] = field(default_factory=dict)
    """The last logged training losses."""
    evaluation: dict[str, float] = field(default_factory=dict)
    """The last evaluation results."""


def resolve_precision(precision: str, device: torch.device, training: bool = True) -> Precision:
    """``auto``: bf16 autocast on CUDA devices that compute it natively
    (:func:`must.distributed.native_bf16`), fp32 everywhere else.

    On CPUs with bf16 instructions bf16 autocast trains faster (``benchmarks/``), and the demo
    preset trains in bf16. But torch 2.14.1's oneDNN (v3.12) has returned garbage (huge or NaN) bf16 weight
    gradients for a 3x3 stride-2 convolution on a 1x1 input: FPN's P6 / P7 on small images, which
    therefore always run in fp32, and the backbone's last stage on images of 16 px or less. So
    ``auto`` stays fp32 on CPU; an explicit ``bf16`` is allowed, with a warning (once per run)
    when ``training`` (inference, e.g. the labeler's teachers, computes no weight gradient).
    """
    if precision == "auto":
        return "bf16" if distributed.native_bf16(device) else "fp32"
    if precision == "bf16" and device.type == "cpu" and training:
        _warn_cpu_bf16()
    return precision  # type: ignore[return-value]


def _warn_cpu_bf16() -> None:
    warn_once_per_run("bf16 autocast on CPU: oneDNN has computed wrong weight gradients for stride-2 "
                      "convolutions on 1x1 inputs; FPN P6/P7 run in fp32 for that reason, a backbone "
                      "fed images of 16 px or less would still hit it", stacklevel=3)


def autocast(device: torch.device, precision: Precision) -> contextlib.AbstractContextManager:
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def shared_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Parameters every task's loss reaches (the trunk): all but those under ``model.heads``."""
    heads = getattr(model, "heads", None)
    head_ids = {id(p) for p in heads.parameters()} if isinstance(heads, nn.Module) else set()
    return [p for p in model.parameters() if id(p) not in head_ids]


def sync_batch_norm(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` with SyncBatchNorm layers when it asks for them (its ``sync_bn``, set from
    ``model.sync_bn``) and runs in several processes: BatchNorm then normalizes with the global
    batch's statistics, so DDP trains as one process on the global batch. Parameters stay the same
    objects and checkpoints the same keys. torch's SyncBatchNorm runs on GPUs only: on CPU the
    layers are left as they are, with a warning."""
    has_batch_norm = any(isinstance(module, nn.modules.batchnorm._BatchNorm) for module in model.modules())
    if not getattr(model, "sync_bn", False) or not has_batch_norm or distributed.world_size() < 2:
        return model
    if device.type == "cpu":
        _warn_cpu_sync_bn()
        return model
    return convert_sync_batchnorm(model)  # timm's: its norm + activation layers keep their activation


def _warn_cpu_sync_bn() -> None:
    warn_once_per_run("model.sync_bn: torch's SyncBatchNorm runs on GPUs only; on CPU each process "
                      "normalizes with its own share of the batch", stacklevel=4)


def compute_losses(model: nn.Module, tasks: Mapping[str, Task], batch: Batch) -> dict[str, dict[str, Tensor]]:
    """``{task: {"loss": ..., parts}}`` for the tasks that have targets in ``batch`` (sec. 3.4)."""
    targets = {name: target for name, target in batch.targets.items() if name in tasks}
    outputs = model(batch.images, targets)
    return {name: tasks[name].loss(outputs[name], target) for name, target in targets.items()}


def evaluate_tasks(model: nn.Module, tasks: Sequence[Task] | Mapping[str, Task], batches: Iterable[Batch],
                   device: torch.device, precision: Precision = "fp32") -> dict[str, dict[str, float]]:
    """Each task's metric over ``batches`` (eval mode, no gradients, autocast as given); tasks no
    batch had targets for on any rank are left out."""
    task_map = dict(tasks) if isinstance(tasks, Mapping) else by_name(list(tasks))
    names = list(task_map)
    metrics = {name: task.metric() for name, task in task_map.items()}
    seen = torch.zeros(len(names), device=device)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), autocast(device, precision):
            for batch in batches:
                batch = batch.to(device)
                outputs = model(batch.images, None)
                for name, target in batch.targets.items():
                    if name in metrics:
                        metrics[name].update(outputs[name], target)
                        seen[names.index(name)] = 1
    finally:
        model.train(was_training)
    seen = distributed.all_reduce_mean(seen)  # metrics sync over ranks inside compute(): all must call it
    return {name: metrics[name].compute() for name, flag in zip(names, seen.tolist()) if flag > 0}


def flatten_metrics(results: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """``{task: {metric: v}}`` -> ``{"task/metric": v}`` (for logging)."""
    return {f"{task}/{name}": float(value) for task, values in results.items() for name, value in values.items()}


def fit(model: nn.Module, tasks: Sequence[Task] | Mapping[str, Task],
        batches_from: Callable[[int], Iterator[Batch]], config: TrainConfig, out_dir: str | Path,
        evaluate: Evaluate | None = None, weighting: Weighting | None = None,
        checkpoint_extra: Mapping[str, Any] | None = None,
        find_unused_parameters: bool | None = True) -> FitResult:
    """Trains ``model`` for ``config.steps`` optimizer steps, resuming from
    ``out_dir/checkpoint.pt`` when it exists.

    ``batches_from(first)`` returns this process's stream of micro-batches starting at micro-batch
    ``first`` (= step x accumulate), each of ``config.micro_batch_size / world_size`` images, e.g.
    ``lambda first: make_loader(..., batch_size=config.micro_batch_size, start_step=first)``.
    ``evaluate(model, step)`` runs every ``eval_every`` steps and at the end, on every rank, with
    the EMA model when there is one. ``weighting`` defaults to ``config.weighting``;
    ``checkpoint_extra`` is stored in the checkpoint under ``"extra"``. ``find_unused_parameters``
    (several processes): True when a batch may lack a task (MuST sec. 3.4); a caller whose every
    batch carries every task passes None: on only when the first batch's losses leave a parameter
    unreached (:mod:`must.train.parameter_use`).
    """
    run = _Run(model, tasks, config, Path(out_dir), weighting, checkpoint_extra)
    if distributed.is_initialized():  # any group size: one process of NCCL runs the N-GPU path
        run.wrap(find_unused_parameters if find_unused_parameters is not None else not reaches_every_parameter(
            run.model, lambda: batches_from(run.step * config.accumulate), run.probe_losses, run.device))
    return run.fit(batches_from, evaluate)


class _Run:
    """The state of one call of :func:`fit`."""

    def __init__(self, model: nn.Module, tasks: Sequence[Task] | Mapping[str, Task], config: TrainConfig,
                 out_dir: Path, weighting: Weighting | None, extra: Mapping[str, Any] | None) -> None:
        self.config, self.out_dir, self.extra = config, out_dir, dict(extra or {})
        self.device = distributed.pick_device(config.device)
        self.info = distributed.setup(self.device)
        self.precision = resolve_precision(config.precision, self.device)
        self.tasks = dict(tasks) if isinstance(tasks, Mapping) else by_name(list(tasks))
        # before the optimizer and the EMA copy are built, and before the DDP wrapping
        self.model = sync_batch_norm(model.to(self.device), self.device)
        self.weighting = (weighting or build_weighting(
            config.weighting, list(self.tasks), config.batch_size, config.lr, config.seed)).to(self.device)
        self.optimizer = build_optimizer(self.model, config, self.weighting.parameters())
        self.scheduler = build_scheduler(self.optimizer, config)
        self.ema = build_ema(self.model, config.ema_decay)
        for task in self.tasks.values():  # Mean Teacher: the weight average is its teacher
            if hasattr(task, "use_weight_average"):
                task.use_weight_average(self.ema.module if self.ema is not None else None)
        self.shared = shared_parameters(self.model)
        # Modules that follow the optimizer (momentum encoders of BYOL, MoCo, DINO): their state is
        # in the model's state_dict, so the checkpoint carries it.
        self.step_hooks = [module for module in self.model.modules()
                           if callable(getattr(module, "after_optimizer_step", None))]
        self.path = out_dir / CHECKPOINT_NAME
        self.step = 0
        self.rng_to_restore: dict[str, Any] | None = None
        self.resumed_from = self._restore() if self.path.exists() else None
        if self.resumed_from is None:
            checkpoints.seed_everything(derive_seed(config.seed, self.info.rank))
        self.wrapped: nn.Module = self.model

    def wrap(self, find_unused_parameters: bool) -> None:
        """DDP over the model (several processes); the search for unused parameters only where a
        step may leave some without a gradient (it costs a graph traversal per step)."""
        self.wrapped = distributed.data_parallel(self.model, self.device, find_unused_parameters)

    def probe_losses(self, model: nn.Module, batch: Batch) -> dict[str, Tensor]:
        with autocast(self.device, self.precision):
            return {name: parts["loss"].float() for name, parts in compute_losses(model, self.tasks, batch).items()}

    def fit(self, batches_from: Callable[[int], Iterator[Batch]], evaluate: Evaluate | None) -> FitResult:
        config = self.config
        logger = RunLogger(self.out_dir, self.step, config.steps, config.log_every,
                           resumed=self.resumed_from is not None, enabled=self.info.is_main,
                           progress=config.progress)
        batches = iter(batches_from(self.step * config.accumulate))
        if self.rng_to_restore is not None:  # after creating the stream, in case it drew from the RNGs
            checkpoints.set_rng_state(self.rng_to_restore)
        evaluation: dict[str, float] = {}
        try:
            self.model.train()
            while self.step < config.steps:
                lr = self.optimizer.param_groups[0]["lr"]  # the rate this step uses
                images = self._train_step(batches, logger)
                self.step += 1
                logger.step_done(self.step, images * distributed.world_size(), lr, self.weighting.weights)
                if evaluate is not None and (self.step == config.steps or (
                        config.eval_every and self.step % config.eval_every == 0)):
                    evaluation = dict(evaluate(self.ema.module if self.ema else self.model, self.step))
                    logger.evaluation(self.step, evaluation)
                if self.step == config.steps or (config.checkpoint_every and self.step % config.checkpoint_every == 0):
                    self.save()
                    logger.flush()
        finally:
            logger.close()
            if hasattr(batches, "close"):
                batches.close()  # stops DataLoader workers
        return FitResult(self.step, self.model, self.ema.module if self.ema else None, self.path,
                         self.resumed_from, logger.last_losses, evaluation)

    def _train_step(self, batches: Iterator[Batch], logger: RunLogger) -> int:
        """One optimizer step over ``accumulate`` micro-batches; returns this rank's image count."""
        config = self.config
        self.optimizer.zero_grad(set_to_none=True)
        images = 0
        for micro in range(config.accumulate):
            batch = next(batches).to(self.device, non_blocking=True)
            images += len(batch)
            last = micro == config.accumulate - 1
            no_sync = getattr(self.wrapped, "no_sync", None)
            with contextlib.nullcontext() if last or no_sync is None else no_sync():
                with autocast(self.device, self.precision):
                    losses = compute_losses(self.wrapped, self.tasks, batch)
                if not losses:
                    # The data holds no label (real or pseudo) of any task the run trains.
                    raise ConfigError(f"a batch at step {self.step + 1} has no target for any of the tasks "
                                      f"{sorted(self.tasks)} (keys {batch.keys[:4]}...): give the data "
                                      f"these tasks' labels, pseudo labels, or pick tasks the data has")
                totals = {name: parts["loss"].float() for name, parts in losses.items()}
                self._check_finite(totals)
                total = self.weighting.backward(totals, self.shared, scale=1.0 / config.accumulate)
            logger.add_losses(total, losses, 1.0 / config.accumulate)
        self.weighting.synchronize_gradients(self.shared)
        if config.grad_clip is not None:
            nn.utils.clip_grad_norm_(self.model.parameters(), config.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        for module in self.step_hooks:
            module.after_optimizer_step(self.step + 1, config.steps)
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        return images

    def _check_finite(self, totals: Mapping[str, Tensor]) -> None:
        """Raises :class:`NonFiniteLossError` on every rank when any rank has a NaN / inf loss."""
        names = list(self.tasks)
        zero = torch.zeros((), device=self.device)
        values = torch.stack([totals.get(name, zero).detach() for name in names])
        bad = distributed.all_reduce_mean((~torch.isfinite(values)).float())
        flagged = [name for name, flag in zip(names, bad.tolist()) if flag > 0]
        if flagged:
            raise NonFiniteLossError(flagged, self.step + 1, self.path)

    def save(self) -> None:
        """Writes the full training state atomically (rank 0; RNG states of every rank)."""
        rng = checkpoints.gather_rng_states()  # collective: every rank takes part
        if self.info.is_main:
            state = {
                "step": self.step, "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "ema": self.ema.state_dict() if self.ema is not None else None,
                "weighting": self.weighting.state_dict(), "rng": rng,
                "world_size": distributed.world_size(), "precision": self.precision,
                "config": to_dict(self.config),
                "tasks": to_dict({name: task.describe() for name, task in self.tasks.items()}),
                "extra": self.extra,
                # what a task learns outside the weights (FlexMatch's, FreeMatch's statistics)
                "task_state": {name: task.state_dict() for name, task in self.tasks.items()
                               if hasattr(task, "state_dict")},
                "model_record": checkpoints.model_record(self.model),
            }
            checkpoints.save_atomically(state, self.path)
        distributed.barrier()

    def _restore(self) -> int:
        state = checkpoints.load(self.path)  # on CPU: RNG states must stay there
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.ema is not None and state["ema"] is not None:
            self.ema.load_state_dict(state["ema"])
        self.weighting.load_state_dict(state["weighting"])
        for name, task_state in state.get("task_state", {}).items():
            if name in self.tasks:
                self.tasks[name].load_state_dict(task_state)
        self.step = int(state["step"])
        changed = sorted(key for key, value in to_dict(self.config).items()
                         if key != "progress" and state["config"].get(key) != value)
        if changed:
            warnings.warn(f"resuming {self.path} (step {self.step}) with a different config: {', '.join(changed)}; "
                          "the continuation is not the run the checkpoint started", stacklevel=3)
        if state["world_size"] == distributed.world_size():
            self.rng_to_restore = state["rng"][self.info.rank]
        else:  # another process count: exact continuation is impossible anyway; reseed per rank
            checkpoints.seed_everything(derive_seed(self.config.seed, self.step, self.info.rank))
        return self.step
