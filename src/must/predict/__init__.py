"""Using a trained model: ``must.load(...).predict(...)``, ``must predict`` (every task's
predictions written at each image's source size in the formats users' tools read) and
``must export`` (ONNX / TorchScript)."""

from must.predict.predictor import Predictor, load

__all__ = ["Predictor", "load"]
