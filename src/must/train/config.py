"""Configs of the training engine and of multi-task loss weighting (frozen dataclasses, loaded by
:mod:`must.config` from YAML presets and ``key.sub=value`` overrides)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from must.errors import ConfigError


@dataclass(frozen=True)
class TeacherRecipe:
    """The batch size and learning rate a teacher was trained with (MuST sec. 3.3 loss weights)."""

    batch_size: int
    lr: float

    def __post_init__(self) -> None:
        if self.batch_size <= 0 or self.lr <= 0:
            raise ConfigError(f"teacher batch_size and lr must be positive, got {self.batch_size}, {self.lr}")


@dataclass(frozen=True)
class WeightingConfig:
    method: Literal["must", "equal", "uncertainty", "pcgrad", "upgrad", "mgda", "cagrad", "nash_mtl", "imtl_g",
                    "aligned_mtl", "graddrop", "dualproj", "dwa", "gradnorm", "rlw", "famo"] = "equal"
    """Loss weights: ``must``: w_i = b_s lr_it / (b_it lr_s) (MuST sec. 3.3); ``equal``: w_i = 1;
    ``uncertainty``: learned task noise (Kendall et al. 2018). Gradient methods on the shared
    parameters (one backward per task): ``pcgrad`` (Yu et al. 2020) and, through torchjd,
    ``upgrad`` / ``dualproj`` (Quinton & Rey 2024), ``mgda`` (Sener & Koltun 2018), ``cagrad``
    (Liu et al. 2021), ``nash_mtl`` (Navon et al. 2022), ``imtl_g`` (Liu et al. 2021),
    ``aligned_mtl`` (Senushkin et al. 2023), ``graddrop`` (Chen et al. 2020); upgrad, dualproj,
    cagrad and nash_mtl need torchjd's optional solvers. Loss-based: ``dwa`` (Liu et al. 2019),
    ``gradnorm`` (Chen et al. 2018), ``rlw`` (Lin et al. 2022), ``famo`` (Liu et al. 2023)."""
    depth_weight: float = 1.0
    """MuST sec. 3.3 sets the depth loss weight separately from the rule (``must`` only)."""
    depth_tasks: tuple[str, ...] = ("depth",)
    """Tasks that take ``depth_weight`` instead of the rule."""
    teachers: dict[str, TeacherRecipe] = field(default_factory=dict)
    """Per task: the recipe of the teacher that made its labels (``must`` only)."""
    weights: dict[str, float] = field(default_factory=dict)
    """Fixed weights that override the rule (``must``, ``equal``, ``pcgrad``): e.g. a
    self-supervised task that has no teacher."""
    regression_tasks: tuple[str, ...] = ("depth", "normals")
    """Tasks that ``uncertainty`` weighs as regression, 1/(2 sigma^2) L + log sigma; the others as
    classification, 1/sigma^2 L + log sigma (Kendall et al. 2018, eq. 7 and 10)."""
    cagrad_c: float = 0.4
    """``cagrad``: radius c of the ball around the average gradient (Liu et al. 2021, eq. 3)."""
    dwa_temperature: float = 2.0
    """``dwa``: softmax temperature T (Liu et al. 2019, eq. 7; the paper's 2)."""
    dwa_window: int = 1
    """``dwa``: optimizer steps averaged into one L_k(t) (the paper averages an epoch)."""
    gradnorm_alpha: float = 1.5
    """``gradnorm``: asymmetry alpha (Chen et al. 2018, eq. 2)."""
    gradnorm_lr: float = 0.025
    """``gradnorm``: step size of the task weights' own gradient descent."""
    famo_lr: float = 0.025
    """``famo``: step size beta of the logits (Liu et al. 2023, Algorithm 1)."""
    famo_decay: float = 0.001
    """``famo``: logit decay gamma (Liu et al. 2023, Algorithm 1)."""

    def __post_init__(self) -> None:
        if self.depth_weight < 0 or any(value < 0 for value in self.weights.values()):
            raise ConfigError("loss weights must be non-negative")
        if self.dwa_window <= 0 or self.dwa_temperature <= 0:
            raise ConfigError(f"dwa_window and dwa_temperature must be positive, got {self.dwa_window}, "
                             f"{self.dwa_temperature}")
        if min(self.gradnorm_lr, self.famo_lr) <= 0 or min(self.cagrad_c, self.gradnorm_alpha, self.famo_decay) < 0:
            raise ConfigError("gradnorm_lr and famo_lr must be positive; cagrad_c, gradnorm_alpha, famo_decay >= 0")


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 1000
    """Optimizer steps."""
    batch_size: int = 32
    """Global batch per optimizer step (over all processes and accumulation micro-steps)."""
    lr: float = 0.1
    """Peak learning rate, reached after warmup, then cosine decay to zero."""
    optimizer: Literal["sgd", "adamw"] = "sgd"
    momentum: float = 0.9
    weight_decay: float = 1e-4
    """Applied to weights only, never to norm parameters or biases."""
    warmup_steps: int = 0
    layer_decay: float = 1.0
    """Layer-wise learning-rate decay over the backbone (BEiT / MAE fine-tuning): layer ``l`` of
    ``L`` trains at ``lr * layer_decay ** (L - l)``, FPN and heads at ``lr``; 1 = off."""
    grad_clip: float | None = None
    """Max global gradient norm; None = no clipping."""
    accumulate: int = 1
    """Micro-steps per optimizer step (gradient accumulation); each sees batch_size / accumulate."""
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    """``auto``: bf16 autocast on CUDA devices that support it, else fp32 (on CPU bf16 is faster but
    oneDNN gets some convolution gradients wrong: see ``engine.resolve_precision``)."""
    ema_decay: float | None = None
    """Exponential moving average of the weights; None = off."""
    checkpoint_every: int = 500
    """Steps between checkpoints; 0 = only at the end."""
    eval_every: int = 0
    """Steps between evaluations; 0 = only at the end."""
    log_every: int = 10
    seed: int = 0
    device: str = "auto"
    workers: int = 0
    """DataLoader worker processes per training process (read by the stage that builds the data
    stream handed to ``fit``)."""
    progress: bool = True
    """Show a progress bar (main process only)."""
    weighting: WeightingConfig = field(default_factory=WeightingConfig)

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "accumulate", "log_every"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("warmup_steps", "checkpoint_every", "eval_every", "workers", "weight_decay"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ConfigError(f"lr must be positive, got {self.lr}")
        if not 0.0 < self.layer_decay <= 1.0:
            raise ConfigError(f"layer_decay must be in (0, 1], got {self.layer_decay}")
        if self.batch_size % self.accumulate:
            raise ConfigError(f"batch_size {self.batch_size} is not divisible by accumulate {self.accumulate}")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ConfigError(f"grad_clip must be positive or null, got {self.grad_clip}")
        if self.ema_decay is not None and not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"ema_decay must be in [0, 1) or null, got {self.ema_decay}")

    @property
    def micro_batch_size(self) -> int:
        """Global batch of one accumulation micro-step: what the data stream yields per batch."""
        return self.batch_size // self.accumulate
