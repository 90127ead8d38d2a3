"""Transfer evaluation (MuST sec. 3.5, supplementary sec. 2.3): fine-tune or linearly
probe any checkpoint on downstream tasks with a grid search over learning rate x training steps."""

from must.transfer.config import DownstreamTask, TransferConfig, default_suite, world_splits
from must.transfer.run import build_transfer_model, run_transfer, run_transfers

__all__ = ["DownstreamTask", "TransferConfig", "build_transfer_model", "default_suite", "run_transfer",
           "run_transfers", "world_splits"]
