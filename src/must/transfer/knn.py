"""``must transfer --mode knn``: the weighted k-nearest-neighbour classifier on frozen features, the
field's training-free check of a representation (Wu et al. 2018, "Unsupervised Feature Learning via
Non-Parametric Instance Discrimination", sec. 3.4; Caron et al. 2021, "Emerging Properties in
Self-Supervised Vision Transformers" (DINO), sec. 3.2 evaluation protocols: k = 20; the protocol
solo-learn and lightly follow).

Every image of the train split (and ``more_train``) is passed once through the frozen trunk (eval
mode, no gradient) and its globally average-pooled C5 vector, what the linear probe's
classification head reads, is L2-normalized and stored with its label. A test image's feature ``f``
votes with its ``k`` most cosine-similar stored features ``f_i`` (Wu et al. eq. 7)::

    score(c) = sum_{i in top-k(f), y_i = c} exp(f . f_i / T),    T = 0.07

and the class with the highest score is the prediction; top-1 accuracy over the test split is the
result, in ``<out>/transfer/<init>/<task>/best_knn.json``. Nothing trains, so there is no grid of
learning rates and steps. Dense tasks (detection, segmentation, depth, normals) are refused: the
classifier labels whole images.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from must import config as config_lib
from must import distributed
from must.data.loader import make_eval_loader
from must.data.readers import ReaderDataset, open_for_task
from must.files import file_sha256, write_atomic
from must.tasks import build_task, task_options_from_data
from must.tasks.classification import ClassificationTask
from must.train.engine import autocast, resolve_precision
from must.transfer.config import TransferConfig
from must.transfer.grid import best_name, json_text
from must.transfer.run import build_transfer_model

NEIGHBOURS = 20
TEMPERATURE = 0.07


def check_knn_tasks(config: TransferConfig) -> None:
    """Refuses a task the classifier cannot evaluate, naming it."""
    for name, spec in config.tasks.items():
        if spec.task != "classification":
            raise config_lib.ConfigError(f"transfer --mode knn: task '{name}' is {spec.task}; k-NN labels whole "
                                         "images, so only classification tasks can be evaluated (--tasks ...)")


def knn_scores(memory: Tensor, labels: Tensor, queries: Tensor, classes: int, k: int = NEIGHBOURS,
               temperature: float = TEMPERATURE, chunk: int = 512) -> Tensor:
    """``float [queries, classes]``: the temperature-weighted votes of each query's ``k`` most
    cosine-similar memory rows (module docstring); ``labels``: ``long [memory]``."""
    memory, queries = F.normalize(memory.float(), dim=1), F.normalize(queries.float(), dim=1)
    k = min(k, memory.shape[0])
    scores = []
    for start in range(0, queries.shape[0], chunk):
        similarity, index = (queries[start:start + chunk] @ memory.T).topk(k, dim=1)
        votes = torch.zeros(similarity.shape[0], classes, device=similarity.device)
        scores.append(votes.scatter_add_(1, labels[index], (similarity / temperature).exp()))
    return torch.cat(scores) if scores else torch.zeros(0, classes)


def pooled_features(model: nn.Module, task: ClassificationTask, datasets: list[ReaderDataset], image_size: int,
                    batch_size: int, workers: int, device: torch.device,
                    precision: str) -> tuple[Tensor, Tensor]:
    """``(pooled C5 [N, C], labels [N])`` of every image of ``datasets`` that has a class label
    (row for row: an unlabeled image neither votes nor is scored), trunk frozen. The classification
    task collates every label as a probability row, so the class is its argmax."""
    loader = make_eval_loader(datasets, {task.name: task}, batch_size, image_size, workers, rank=0, world_size=1)
    features, labels = [], []
    model.eval()
    with torch.no_grad(), autocast(device, resolve_precision(precision, device, training=False)):
        for batch in loader:
            batch = batch.to(device)
            target = batch.targets[task.name]
            # pooled in fp32: a bf16 mean over C5's cells would round the features the vote compares
            pooled = model.features(batch.images, pyramid=False).c5.float().mean(dim=(-2, -1))
            features.append(pooled[target.present].cpu())
            labels.append(target.value[target.present].argmax(dim=-1).cpu())
    return torch.cat(features), torch.cat(labels)


def knn_identity(config: TransferConfig, name: str, init_sha256: str | None) -> dict[str, Any]:
    """What task ``name``'s k-NN result depends on: the checkpoint (by content), the task's data,
    image size and options, the model, the input transform and the precision (``k`` and ``T`` are
    constants, recorded too). Written into ``best_knn.json``, so a rerun can tell a result of
    another config from a current one."""
    spec = config.tasks[name]
    return {"init": config.init, "init_sha256": init_sha256,
            "task": name, "train": config_lib.to_dict(spec.train), "more_train": config_lib.to_dict(spec.more_train),
            "test": config_lib.to_dict(spec.test), "image_size": spec.image_size,
            "task_options": config_lib.to_dict(spec.task_options),
            "model": config_lib.to_dict(config_lib.replace(config.model, init=None)),
            "input_transform": config.input_transform, "precision": config.precision,
            "k": NEIGHBOURS, "temperature": TEMPERATURE}


def knn_is_current(config: TransferConfig, out: str | Path) -> bool:
    """Whether every task of ``config`` has a ``best_knn.json`` under ``out`` made for this config."""
    paths = {name: Path(out) / "transfer" / config.init_name / name / best_name("knn") for name in config.tasks}
    if not all(path.exists() for path in paths.values()):
        return False
    init_sha256 = checkpoint_sha256(config)
    return all(json.loads(path.read_text()).get("identity") == knn_identity(config, name, init_sha256)
               for name, path in paths.items())


def checkpoint_sha256(config: TransferConfig) -> str | None:
    return file_sha256(Path(config.init)) if config.init is not None else None


def knn_task(config: TransferConfig, name: str, init_sha256: str | None) -> dict[str, Any]:
    """Evaluates one classification task; returns its result record."""
    start = time.perf_counter()
    spec = config.tasks[name]
    train = [open_for_task(dataset, spec.task) for dataset in (spec.train, *spec.more_train)]
    test = open_for_task(spec.test, spec.task)
    task = build_task(spec.task, **task_options_from_data(spec.task, train[0], spec.task_options))
    assert isinstance(task, ClassificationTask)
    device = distributed.pick_device(config.device)
    model = build_transfer_model(config, task).to(device)
    settings = (spec.image_size, spec.eval_batch_size, config.data_workers, device, config.precision)
    memory, memory_labels = pooled_features(model, task, train, *settings)
    queries, query_labels = pooled_features(model, task, [test], *settings)
    predicted = knn_scores(memory, memory_labels, queries, task.num_outputs).argmax(dim=1)
    return {"init": config.init_name, "task": name, "metric": "top1", "mode": "knn",
            "value": float((predicted == query_labels).float().mean()), "k": NEIGHBOURS,
            "temperature": TEMPERATURE, "memory": int(memory.shape[0]), "queries": int(queries.shape[0]),
            "seconds": round(time.perf_counter() - start, 2), "dataset": spec.train.format,
            "identity": knn_identity(config, name, init_sha256)}


def run_knn(config: TransferConfig, out: str | Path) -> dict[str, dict[str, Any]]:
    """k-NN top-1 of every task of ``config`` (classification only) into ``best_knn.json``; returns
    ``{task: record}``. Runs in the main process only (it is one pass over the data)."""
    check_knn_tasks(config)
    root = Path(out) / "transfer" / config.init_name
    results = {}
    init_sha256 = checkpoint_sha256(config)  # once: every task's record names the same checkpoint
    for name in config.tasks:
        record = knn_task(config, name, init_sha256)
        if distributed.from_environment().is_main:
            write_atomic(root / name / best_name("knn"), json_text(record))
        results[name] = record
    return results
