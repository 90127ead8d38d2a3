"""must: Multi-Task Self-Training (MuST, Ghiasi et al., ICCV 2021) in PyTorch.

``must.load(path)`` rebuilds any trained model of ours (teacher, student, transfer cell, or its
checkpoint) for ``.predict(images)``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from must.predict import Predictor


def load(path: Any, device: Any = "cpu", tasks: Any = None) -> Predictor:
    """See :func:`must.predict.load`; imported on call so ``import must`` stays light."""
    from must.predict import load as load_predictor

    return load_predictor(path, device, tasks)
