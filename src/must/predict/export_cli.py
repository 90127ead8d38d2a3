"""``must export``: a trained model as ONNX (checked against onnxruntime) or TorchScript.

    must export --model runs/x/student --format onnx --out runs/x/export
    must export --model runs/x/student --format torchscript --input float --out DIR
"""

from __future__ import annotations

import argparse
from pathlib import Path

from must.predict.export import export_model

SUMMARY = "export a trained model to ONNX / TorchScript"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Export a trained model (student, teacher or transfer cell) into --out: model.onnx or "
        "model.pt, and export.json (tasks, class names, input size, dtype, normalization, outputs). "
        "Dynamic batch size. ONNX needs the export extra: pip install 'must[export]'.")
    parser.add_argument("--model", required=True, type=Path, metavar="DIR",
                        help="a model directory of ours (student, teacher, transfer cell) or its checkpoint.pt")
    parser.add_argument("--format", choices=("onnx", "torchscript"), default="onnx", dest="export_format")
    parser.add_argument("--input", choices=("uint8", "float"), default="uint8", dest="input_kind",
                        help="uint8 0..255 images (normalized inside) or float already normalized")
    parser.add_argument("--tasks", metavar="T1,T2", help="a subset of the model's tasks (default: all)")
    parser.add_argument("--out", required=True, type=Path, help="output directory")


def run(args: argparse.Namespace) -> int:
    tasks = [task.strip() for task in args.tasks.split(",") if task.strip()] if args.tasks else None
    result = export_model(args.model, args.out, args.export_format, args.input_kind, tasks)
    left = "".join(f"; left out {name}: {why}" for name, why in result.left_out.items())
    print(f"exported {', '.join(result.description['tasks'])} to {result.path}{left}")
    return 0
