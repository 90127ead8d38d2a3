"""``must transfer --mode knn``: the weighted vote on a hand-computed case and on two separable
clusters, the refusal of dense tasks, and a tiny end-to-end run writing ``best_knn.json``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from must.config import ConfigError
from must.transfer.knn import knn_scores

from .test_cli import parse


def test_weighted_vote_by_hand() -> None:
    """Query (1, 0) against memory (1, 0) class 0, (0.8, 0.6) and (0, 1) class 1: cosine similarities
    1, 0.8, 0. With T = 0.5 class 0 scores e^2 = 7.39 and class 1 e^1.6 + e^0 = 5.95; with T = 10
    the close vote flips, e^0.1 = 1.11 against e^0.08 + 1 = 2.08 (Wu et al. 2018 eq. 7)."""
    memory = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 2.0]])  # norms need not be 1
    labels = torch.tensor([0, 1, 1])
    query = torch.tensor([[3.0, 0.0]])
    sharp = knn_scores(memory, labels, query, classes=2, k=3, temperature=0.5)
    assert sharp[0].tolist() == pytest.approx([math.exp(2.0), math.exp(1.6) + 1.0], rel=1e-5)
    flat = knn_scores(memory, labels, query, classes=2, k=3, temperature=10.0)
    assert flat[0].tolist() == pytest.approx([math.exp(0.1), math.exp(0.08) + 1.0], rel=1e-5)
    assert flat.argmax(dim=1).item() == 1
    nearest_two = knn_scores(memory, labels, query, classes=2, k=2, temperature=10.0)
    assert nearest_two[0].tolist() == pytest.approx([math.exp(0.1), math.exp(0.08)], rel=1e-5)


def test_two_separable_clusters_are_classified_perfectly() -> None:
    generator = torch.Generator().manual_seed(0)
    centres = torch.tensor([[5.0] + [0.0] * 7, [0.0] * 7 + [5.0]])
    memory = torch.cat([centres[0] + torch.randn(30, 8, generator=generator),
                        centres[1] + torch.randn(30, 8, generator=generator)])
    labels = torch.tensor([0] * 30 + [1] * 30)
    queries = torch.cat([centres[0] + torch.randn(10, 8, generator=generator),
                         centres[1] + torch.randn(10, 8, generator=generator)])
    predicted = knn_scores(memory, labels, queries, classes=2).argmax(dim=1)
    assert predicted.tolist() == [0] * 10 + [1] * 10


def test_a_dense_task_is_refused_naming_it(tmp_path: Path) -> None:
    from must.transfer import cli

    args = parse("--init", "none", "--out", str(tmp_path), "--mode", "knn", "--tasks", "classification,segmentation",
                 "--fashion", str(tmp_path / "absent"))
    with pytest.raises(ConfigError, match="task 'segmentation' is segmentation"):
        cli.run(args)


def test_tiny_run_writes_best_knn(tmp_path: Path, world_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from must.transfer import cli

    args = parse("--init", "none", "--out", str(tmp_path), "--world", str(world_root), "--mode", "knn",
                 "--fashion", str(tmp_path / "absent"), "model.width=0.125", "model.fpn_channels=16",
                 "tasks.classification.image_size=32")
    assert cli.run(args) == 0  # without --tasks: the suite's classification task only
    record = json.loads((tmp_path / "transfer" / "scratch" / "classification" / "best_knn.json").read_text())
    assert record["mode"] == "knn" and record["k"] == 20 and record["memory"] == 16 and record["queries"] == 8
    assert 0.0 <= record["value"] <= 1.0
    assert f"top1 = {record['value']:.4f}" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "transfer" / "scratch").iterdir()) == ["classification"]


def test_a_result_is_current_only_for_its_own_checkpoint_and_config(tmp_path: Path) -> None:
    """``must demo`` skips a row's k-NN only while ``best_knn.json`` was made for the same
    checkpoint content, data and model: a retrained or changed row is evaluated again."""
    from must import config as config_lib
    from must.data.readers import DatasetConfig
    from must.files import write_atomic
    from must.transfer.config import DownstreamTask, TransferConfig
    from must.transfer.knn import checkpoint_sha256, knn_identity, knn_is_current

    checkpoint = tmp_path / "checkpoint.pt"
    checkpoint.write_bytes(b"weights, first training")
    task = DownstreamTask(task="classification", train=DatasetConfig(format="world", root="a"),
                          test=DatasetConfig(format="world", root="b"))
    config = TransferConfig(init=str(checkpoint), init_name="row", tasks={"classification": task})
    assert not knn_is_current(config, tmp_path)  # nothing written yet
    write_atomic(tmp_path / "transfer/row/classification/best_knn.json",
                 json.dumps({"value": 0.5, "identity": knn_identity(config, "classification",
                                                                   checkpoint_sha256(config))}).encode())
    assert knn_is_current(config, tmp_path)
    wider = config_lib.replace(config, model=config_lib.replace(config.model, width=0.5))
    assert not knn_is_current(wider, tmp_path)  # another model
    checkpoint.write_bytes(b"weights, retrained")
    assert not knn_is_current(config, tmp_path)  # the same path, other weights


def test_images_without_a_label_are_left_out_of_the_memory() -> None:
    """Features and labels stay aligned row for row when an image has no class label (a labeled
    set with a gap): such an image can neither vote nor be scored."""
    from types import SimpleNamespace

    from torch import nn

    from must.data.sample import Sample
    from must.tasks.classification import ClassificationTask
    from must.transfer.knn import pooled_features

    class MeanColour(nn.Module):
        def features(self, images: torch.Tensor, pyramid: bool | None = None) -> SimpleNamespace:
            return SimpleNamespace(c5=images.mean(dim=(-2, -1), keepdim=True))

    samples = [Sample(f"image{index}", torch.full((3, 8, 8), 60 * index, dtype=torch.uint8),
                      {} if index == 1 else {"classification": torch.tensor(index % 2)}) for index in range(4)]
    features, labels = pooled_features(MeanColour(), ClassificationTask(2), [samples], image_size=8, batch_size=4,
                                       workers=0, device=torch.device("cpu"), precision="fp32")
    assert labels.tolist() == [0, 0, 1]  # images 0, 2, 3
    assert features[:, 0].tolist() == pytest.approx([0.0, 120 / 255, 180 / 255], abs=1e-2)
