"""DDP: 1 vs. 2 processes (torchrun, gloo) on the same global batch.

Each launch trains the demo student through ``fit`` on in-memory batches (each rank holds its
slice of every global batch, as ``make_loader`` cuts it) and rank 0 reports the step time. The
cores are split evenly: 1 process x 2 threads vs. 2 processes x 1 thread, so on a 2-core CPU the
gain is bounded by what one thread per process loses and gloo's all-reduce costs.

The same launch on GPUs or several machines::

    torchrun --nproc_per_node=8 -m benchmarks.ddp --child --steps 20 --out ddp.json   # 8 GPUs
    torchrun --nnodes=2 --node_rank=R --master_addr=HOST --nproc_per_node=8 -m benchmarks.ddp --child ...

(``must`` picks NCCL and the rank's CUDA device when CUDA is present, gloo on CPU.)

    python -m benchmarks.ddp
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def child(args: argparse.Namespace) -> None:
    """One torchrun process: time ``args.steps`` steps of ``fit``; rank 0 writes the result."""
    import torch

    from benchmarks.common import StampedStream, batches_in_memory, model_config, student
    from must import distributed
    from must.train.config import TrainConfig
    from must.train.engine import fit

    world_size = int(os.environ.get("WORLD_SIZE", 1))
    torch.set_num_threads(max(1, args.cores // world_size))
    rank = int(os.environ.get("RANK", 0))
    model, tasks = student(model_config())
    batches = batches_in_memory(tasks, 2, args.batch_size, 64, rank=rank, world_size=world_size)
    data = StampedStream(batches)
    config = TrainConfig(steps=args.steps + 2, batch_size=args.batch_size, lr=0.01, precision="fp32",
                         checkpoint_every=0, progress=False, device="cpu")
    with tempfile.TemporaryDirectory() as out:
        fit(model, tasks, data, config, out)
    if rank == 0:
        Path(args.out).write_text(json.dumps({"processes": world_size, "threads": torch.get_num_threads(),
                                              "seconds_per_step": data.seconds_per_step()}))
    distributed.teardown()


def _launch(processes: int, batch_size: int, steps: int, cores: int) -> float:
    with tempfile.TemporaryDirectory(prefix="ddp-bench-") as scratch:
        out = Path(scratch) / "result.json"
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                   f"--nproc_per_node={processes}", "-m", "benchmarks.ddp", "--child",
                   "--batch-size", str(batch_size), "--steps", str(steps), "--cores", str(cores),
                   "--out", str(out)]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
               "OMP_NUM_THREADS": str(max(1, cores // processes))}
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
        if done.returncode or not out.exists():
            raise RuntimeError(f"torchrun with {processes} processes failed: {done.stderr[-2000:]}")
        return json.loads(out.read_text())["seconds_per_step"]


def measure(batch_size: int = 16, steps: int = 3, repeats: int = 2, cores: int | None = None) -> dict[str, Any]:
    from benchmarks.common import interleave, median, pair_ratio

    cores = cores or os.cpu_count() or 2
    times = interleave({"one": lambda: _launch(1, batch_size, steps, cores),
                        "two": lambda: _launch(2, batch_size, steps, cores)}, repeats, warmup=0)
    speedup = pair_ratio(times, "one", "two")
    return {"value": speedup, "target": "> 1 where cores allow (bounded on 2 cores)",
            "one_process_ms_per_step": 1000 * median(times["one"]),
            "two_processes_ms_per_step": 1000 * median(times["two"]),
            "global_batch": batch_size, "cores": cores, "backend": "gloo", "repeats": repeats}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--child", action="store_true")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--out", default="ddp.json")
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    print(json.dumps(measure(args.batch_size, args.steps), indent=1))


if __name__ == "__main__":
    main()
