"""Weights from a local file into a :class:`~must.models.multitask.MultiTaskModel`.

Three formats, told apart by their keys (MuST sec. 3.1: a teacher may be "a model the user
already has"; sec. 3.5 transfer and sec. 4.4 bootstrapping start from a checkpoint):

* ours: ``{"model": state_dict, ...}`` (or a bare state dict) with ``backbone.*``, ``fpn.*`` and
  ``heads.<task>.*`` keys;
* a torchvision ResNet state dict (``conv1``, ``bn1``, ``layer1..4``, ``fc``);
* a timm state dict of the backbone's model (any timm ResNet, CNN or ViT; also
  ``{"state_dict": ...}`` training checkpoints and ``.safetensors`` files).

Classifier state dicts map key for key onto the backbone (which keeps their parameter names, timm
models under ``trunk.``); the layers after C5 (ResNet ``fc``, a timm model's head, final conv or
norm) are skipped, and a ViT's position embedding is resampled to the model's grid. Every load
returns a :class:`LoadReport`; a file that is not a weight file, or whose tensors do not fit the
model, raises :class:`CheckpointError` naming the file.
"""

from __future__ import annotations

import json
import logging
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from must.errors import CheckpointError

if TYPE_CHECKING:  # multitask.py imports this module
    from must.models.multitask import MultiTaskModel

LOG = logging.getLogger(__name__)
WRAPPER_PREFIXES = ("module.", "_orig_mod.")
"""Added by DistributedDataParallel and torch.compile; stripped from every key."""


@dataclass
class LoadReport:
    """What a load did, by model key (loaded / missing) and file key (unexpected / skipped)."""

    path: Path
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    """Model tensors the file did not provide: they keep their initialization."""
    unexpected: list[str] = field(default_factory=list)
    """File tensors that fit nowhere in the model."""
    skipped: list[str] = field(default_factory=list)
    """File tensors deliberately not loaded, with the reason (classifier, heads, shape)."""

    def __str__(self) -> str:
        parts = [f"{self.path}: loaded {len(self.loaded)} tensors"]
        for name in ("missing", "unexpected", "skipped"):
            keys = getattr(self, name)
            if keys:
                parts.append(f"{name} {len(keys)}: {_preview(keys)}")
        return "; ".join(parts)


def read_state_dict(path: str | Path) -> tuple[bool, dict[str, Tensor]]:
    """``(is_ours, state_dict)`` of a weight file, on the CPU, wrapper prefixes stripped.

    Pickles are read with ``weights_only=True``: a weight file cannot run code when loaded.
    """
    path = Path(path)
    data = _read_file(path)
    if isinstance(data, dict) and isinstance(data.get("model"), dict):
        data = data["model"]
    elif isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        data = data["state_dict"]
    if not isinstance(data, dict) or not data or not all(isinstance(v, Tensor) for v in data.values()):
        found = list(data)[:8] if isinstance(data, dict) else type(data).__name__
        raise CheckpointError(
            f"{path}: not a checkpoint: expected a state dict (name -> tensor) or a dict with a "
            f"'model' state dict; found {found}"
        )
    state = {_strip_wrappers(str(key)): value for key, value in data.items()}
    return any(key.startswith("backbone.") for key in state), state


def load_backbone(model: MultiTaskModel, path: str | Path) -> LoadReport:
    """Loads the backbone from any of the three formats; FPN and heads keep their initialization."""
    path = Path(path)
    return _load_backbone(model, path, *read_state_dict(path))


def load_checkpoint(model: MultiTaskModel, path: str | Path, heads: bool = False) -> LoadReport:
    """Loads backbone + FPN from one of our checkpoints, and with ``heads=True`` every head whose
    name is in the model and whose tensors all have the model's shapes (others are reported as
    skipped and keep their initialization: e.g. a transfer task's new classifier, MuST sec. 3.5)."""
    path = Path(path)
    is_ours, state = read_state_dict(path)
    if not is_ours:
        raise CheckpointError(f"{path}: a plain classifier state dict, not a must checkpoint "
                              "(no 'backbone.' keys); load it with load_backbone")
    return _load_checkpoint(model, path, state, heads)


def load_initial_weights(model: MultiTaskModel, path: str | Path, heads: bool = False) -> LoadReport:
    """``ModelConfig.init``: our checkpoints load backbone + FPN (+ heads), others the backbone."""
    path = Path(path)
    is_ours, state = read_state_dict(path)
    if is_ours:
        return _load_checkpoint(model, path, state, heads)
    return _load_backbone(model, path, False, state)


def _load_backbone(model: MultiTaskModel, path: Path, is_ours: bool, state: dict[str, Tensor]) -> LoadReport:
    report = LoadReport(path)
    if is_ours:
        source = {key[len("backbone."):]: value for key, value in state.items()
                  if key.startswith("backbone.")}
        report.skipped += [f"{key} (not the backbone)" for key in state if not key.startswith("backbone.")]
    else:
        source, skipped = model.backbone.classifier_state(state)
        report.skipped += skipped
    _load_part(model.backbone, source, "backbone.", path, report)
    _log(report)
    return report


def _load_checkpoint(model: MultiTaskModel, path: Path, state: dict[str, Tensor], heads: bool) -> LoadReport:
    report = LoadReport(path)
    for part in ("backbone", "fpn"):
        source = {key[len(part) + 1:]: value for key, value in state.items() if key.startswith(f"{part}.")}
        _load_part(getattr(model, part), source, f"{part}.", path, report)
    _load_heads(model, state, heads, report)
    report.unexpected += [key for key in state if not key.startswith(("backbone.", "fpn.", "heads."))]
    _log(report)
    return report


def _load_part(module: nn.Module, source: dict[str, Tensor], prefix: str, path: Path,
               report: LoadReport) -> None:
    """Loads the tensors of ``source`` that ``module`` has; any shape mismatch is an error."""
    target = module.state_dict()
    mismatched = [f"{prefix}{key}: file {tuple(value.shape)} vs model {tuple(target[key].shape)}"
                  for key, value in source.items() if key in target and value.shape != target[key].shape]
    if mismatched:
        raise CheckpointError(f"{path}: {len(mismatched)} tensors do not fit the model's {prefix[:-1]} "
                              f"(different architecture or width?): {_preview(mismatched)}{_backbone_hint(path)}")
    matched = [key for key in source if key in target]
    if not matched:
        raise CheckpointError(
            f"{path}: none of its tensors fit the model's {prefix[:-1]}: file keys look like "
            f"{_preview(list(source)) or 'nothing'}; the model expects {_preview(list(target))}"
            f"{_backbone_hint(path)}"
        )
    module.load_state_dict({key: source[key] for key in matched}, strict=False)
    # BatchNorm's step counter is bookkeeping, absent from frozen / group norms: not worth a warning.
    report.loaded += [prefix + key for key in matched]
    report.missing += [prefix + key for key in target if key not in source and not _is_counter(key)]
    report.unexpected += [prefix + key for key in source if key not in target and not _is_counter(key)]


def _backbone_hint(path: Path) -> str:
    """``"; this checkpoint was trained with backbone X ...: pass model.backbone=X"`` when a record
    beside ``path`` (``pretrain.json``, ``student.json``, ``teacher.json``) names its backbone."""
    from must.models.records import PRETRAIN_RECORD, STUDENT_RECORD, TEACHER_RECORD  # records imports this module

    for name in (PRETRAIN_RECORD, STUDENT_RECORD, TEACHER_RECORD):
        try:
            record = json.loads((path.parent / name).read_text())
        except (OSError, ValueError):
            continue
        model = record.get("model") if isinstance(record, dict) else None
        backbone = model.get("backbone") if isinstance(model, dict) else None
        if isinstance(backbone, str):
            return (f"; this checkpoint was trained with backbone '{backbone}' ({path.parent / name}): "
                    f"pass model.backbone={backbone}")
    return ""


def _load_heads(model: MultiTaskModel, state: dict[str, Tensor], heads: bool, report: LoadReport) -> None:
    by_head: dict[str, dict[str, Tensor]] = {}
    for key, value in state.items():
        if key.startswith("heads."):
            name, _, rest = key[len("heads."):].partition(".")
            by_head.setdefault(name, {})[rest] = value
    for name, source in by_head.items():
        reason = _head_mismatch(model, name, source) if heads else "heads not requested"
        if reason:
            report.skipped.append(f"heads.{name}.* ({reason})")
            continue
        model.heads[name].load_state_dict(source)
        report.loaded += [f"heads.{name}.{key}" for key in source]
    if heads:
        report.missing += [f"heads.{name}.*" for name in model.heads if name not in by_head]


def _head_mismatch(model: MultiTaskModel, name: str, source: dict[str, Tensor]) -> str | None:
    """Why head ``name`` of the file cannot be loaded into ``model``, or ``None`` if it can."""
    if name not in model.heads:
        return f"the model has no '{name}' head"
    target = model.heads[name].state_dict()
    if set(target) != set(source):
        return f"different layers: {_preview(sorted(set(target) ^ set(source)))}"
    for key, value in source.items():
        if value.shape != target[key].shape:
            return f"{key}: file {tuple(value.shape)} vs model {tuple(target[key].shape)}"
    return None


def read_checkpoint_record(path: str | Path) -> dict[str, Any]:
    """The ``model_record`` of one of our checkpoints (what the training engine records beside the
    tensors, e.g. the input transform); ``{}`` for a checkpoint written before it, or another
    weight file. The file is memory-mapped, so its tensors are not read for this small dict. An
    unreadable file raises :class:`CheckpointError` naming it."""
    path = Path(path)
    if path.suffix == ".safetensors":  # tensors only: no record; the header says whether it is one
        _read_file(path, header_only=True)
        return {}
    data = _read_file(path, mmap=True)
    record = data.get("model_record") if isinstance(data, dict) else None
    return dict(record) if isinstance(record, dict) else {}


def _read_file(path: Path, mmap: bool = False, header_only: bool = False) -> Any:
    """The file's content on the CPU. ``mmap``: tensors mapped, not read (files of ``torch.save``'s
    zip format; the legacy format is read whole). ``header_only``: a safetensors file's tensor names."""
    if not path.is_file():
        raise CheckpointError(f"{path}: no such weight file")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError, safe_open
        from safetensors.torch import load_file

        try:
            if header_only:
                with safe_open(path, framework="pt", device="cpu") as handle:
                    return list(handle.keys())
            return load_file(path, device="cpu")
        except (SafetensorError, OSError) as error:
            raise CheckpointError(f"{path}: not a readable safetensors file ({error})") from None
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap and zipfile.is_zipfile(path))
    except Exception as error:  # torch.load raises many types; all mean "not a weight file"
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise CheckpointError(
            f"{path}: cannot be read as a PyTorch weight file ({type(error).__name__}: {first_line})"
        ) from None


def _strip_wrappers(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for prefix in WRAPPER_PREFIXES:
            if key.startswith(prefix):
                key, changed = key[len(prefix):], True
    return key


def _is_counter(key: str) -> bool:
    return key.endswith("num_batches_tracked")


def _preview(keys: list[str], count: int = 5) -> str:
    shown = ", ".join(keys[:count])
    return shown + (f", ... ({len(keys) - count} more)" if len(keys) > count else "")


def _log(report: LoadReport) -> None:
    if report.missing or report.unexpected:
        LOG.warning("%s", report)
    else:
        LOG.info("%s", report)
