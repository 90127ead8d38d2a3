"""Detection metrics under DDP: a real 2-process gloo evaluation (the evaluation loader splitting
the set over the ranks, the engine's ``evaluate_tasks``) returns on every rank exactly the metric
of one process on the whole set.

The model is a stand-in that reads each image's index from its pixels and returns seeded
detections for it, so both runs see the same detections per image. Scores sit on a 0.1 grid:
ties between images exist, so the gathered images must also come back in the set's order.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import Tensor, nn

from must.data.loader import make_eval_loader
from must.data.sample import Sample
from must.tasks.detection import DetectionTask
from must.train.engine import evaluate_tasks

HERE = Path(__file__).resolve().parent
IMAGES = 23
SIZE = 32
ABSENT = {3, 8, 9}
"""Images without a detection target (each in a batch whose other images have one)."""


def ground_truth(index: int) -> dict[str, Tensor]:
    generator = torch.Generator().manual_seed(index)
    count = int(torch.randint(1, 5, (), generator=generator))
    corner = torch.rand(count, 2, generator=generator) * 20
    boxes = torch.cat([corner, corner + 4 + torch.rand(count, 2, generator=generator) * 8], 1)
    return {"boxes": boxes, "labels": torch.randint(0, 3, (count,), generator=generator),
            "difficult": torch.rand(count, generator=generator) < 0.2}


def detections(index: int) -> dict[str, Tensor]:
    """Noisy copies of the image's boxes, some with the wrong class, plus false alarms."""
    generator = torch.Generator().manual_seed(1000 + index)
    truth = ground_truth(index)
    noisy = truth["boxes"] + torch.randn(truth["boxes"].shape, generator=generator) * 0.8
    labels = torch.where(torch.rand(len(noisy), generator=generator) < 0.8, truth["labels"],
                         torch.randint(0, 3, (len(noisy),), generator=generator))
    corner = torch.rand(2, 2, generator=generator) * 20
    boxes = torch.cat([noisy, torch.cat([corner, corner + 6], 1)])
    labels = torch.cat([labels, torch.randint(0, 3, (2,), generator=generator)])
    scores = (torch.rand(len(boxes), generator=generator) * 10).floor() / 10 + 0.05  # ties
    return {"boxes": boxes, "labels": labels, "scores": scores}


def dataset() -> list[Sample]:
    return [Sample(f"image{i}", torch.full((3, SIZE, SIZE), i, dtype=torch.uint8),
                   {} if i in ABSENT else {"detection": ground_truth(i)}) for i in range(IMAGES)]


class SeededDetector(nn.Module):
    """Returns ``detections(i)`` for the image whose pixels all hold ``i``."""

    def forward(self, images: Tensor, targets: object) -> dict[str, dict[str, list[dict[str, Tensor]]]]:
        indices = (images[:, 0, 0, 0] * 255).round().long().tolist()
        return {"detection": {"detections": [detections(i) for i in indices]}}


def evaluate(rank: int | None = None, world_size: int | None = None) -> dict[str, float]:
    task = DetectionTask(3)
    loader = make_eval_loader([dataset()], {"detection": task}, 4, SIZE, rank=rank, world_size=world_size)
    return evaluate_tasks(SeededDetector(), {"detection": task}, iter(loader), torch.device("cpu"))["detection"]


def main(out: str) -> None:
    """Entry point of the torchrun processes."""
    from must import distributed

    torch.set_num_threads(1)
    distributed.setup(torch.device("cpu"))
    result = evaluate()
    (Path(out) / f"rank{distributed.rank()}.json").write_text(json.dumps(result))
    distributed.teardown()


def test_two_process_gloo_evaluation_equals_one_process(tmp_path: Path, run_worker) -> None:
    one_process = evaluate(rank=0, world_size=1)
    # precondition: rank 0's half alone scores differently (the failure this test guards against)
    assert evaluate(rank=0, world_size=2) != one_process
    worker = (f"import sys; sys.path.insert(0, {str(HERE)!r}); "
              "import test_detection_metrics_distributed as t; t.main(sys.argv[1])")
    assert run_worker(worker, tmp_path) == [one_process, one_process]
