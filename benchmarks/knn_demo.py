"""k-NN top-1 (``must transfer --mode knn``: k = 20, T = 0.07, pooled C5) of the demo run's
checkpoints on Fashion-MNIST classification, written to ``docs/measurements/knn.json``.

    python -m benchmarks.knn_demo --run /work/demo-run2/runs/demo --memory 1000 --test 500

Rows: scratch (random init), supervised (the classification teacher), simclr (pre-training), must
(the student). ``--memory`` caps the train split used as memory (the first N images), ``--test`` the test split
(the suite's 2,000 by default).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from benchmarks.common import command_line, model_config, run_stamp
from must import config as config_lib
from must.data.readers.fashion_mnist import DEFAULT_ROOT
from must.transfer.config import TransferConfig, default_suite
from must.transfer.knn import run_knn

ROWS = {"scratch": None, "supervised": "teachers/classification/checkpoint.pt",
        "simclr": "pretrain/simclr/checkpoint.pt", "must": "student/checkpoint.pt"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="a finished demo run directory")
    parser.add_argument("--memory", type=int, default=10000, help="train images used as memory")
    parser.add_argument("--test", type=int, default=2000, help="test images")
    parser.add_argument("--out", type=Path, default=Path("/tmp/must-knn"), help="scratch output directory")
    parser.add_argument("--result", type=Path,
                        default=Path(__file__).resolve().parents[1] / "docs/measurements/knn.json")
    args = parser.parse_args()
    suite = default_suite(args.out / "world", DEFAULT_ROOT)
    spec = suite["classification"]
    spec = config_lib.replace(spec, train=config_lib.replace(spec.train, limit=args.memory),
                              test=config_lib.replace(spec.test, limit=args.test))
    rows = {}
    for name, checkpoint in ROWS.items():
        init = None if checkpoint is None else str(args.run / checkpoint)
        config = TransferConfig(init=init, init_name=name, mode="knn", tasks={"classification": spec},
                                model=model_config(), device="cpu")
        start = time.perf_counter()
        record = run_knn(config, args.out)["classification"]
        rows[name] = {"init": init, "top1": record["value"], "memory": record["memory"],
                      "queries": record["queries"], "seconds": round(time.perf_counter() - start, 1)}
        print(name, rows[name], flush=True)
    result = {**run_stamp(), "command": command_line("benchmarks.knn_demo"), "k": 20, "temperature": 0.07,
              "features": "global-average-pooled C5, L2-normalized", "dataset": "fashion_mnist",
              "rows": rows}
    args.result.parent.mkdir(parents=True, exist_ok=True)
    args.result.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
