"""Export a classifier (float or QAT) of a config to ONNX, checked on the config's test images.

Used by the classification and qat tasks (``Task.export``, export at the end of QAT) and the
benchmarks.  Metadata records what a deployment needs besides the graph: classes, input size
and normalisation.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from quant.export import DEFAULT_OPSET, ExportReport, Tolerance, export_onnx
from tasks.classification.data import detect_format
from tasks.classification.task import class_names
from tasks.classification.input_config import input_config
from tasks.engine import task as task_registry
from tasks.engine.exporting import check_images


def export_metadata(cfg, dataset) -> dict[str, str]:
    d = cfg.DATASET
    fmt = detect_format(cfg.resolve_path(d.ROOT), d.FORMAT) if d.ROOT else d.FORMAT
    spec = input_config(cfg, fmt)
    return {
        "task": cfg.TASK,
        "config": cfg.NAME,
        "model": cfg.MODEL.NAME,
        "classes": json.dumps(class_names(dataset, cfg.MODEL.NUM_CLASSES)),
        "input": json.dumps({"size": spec.size, "mean": list(spec.mean), "std": list(spec.std),
                             "layout": "NCHW RGB float, (x/255 - mean) / std"}),
    }


@dataclass(frozen=True)
class ExportSettings:
    """What an export is written and checked with: a task gives them from its own config
    (``ClassificationTask.export_settings``; QAT's come from its ``QUANT`` section)."""

    opset: int = DEFAULT_OPSET
    weight_format: str = "int8"  # of quantized layers; a float model stores float weights
    check_images: int = 512
    min_agreement: float = Tolerance().min_top1_agreement


def export_classifier(model: nn.Module, cfg, dataset, path: str | Path | None, images: int | None = None,
                      threads: int | None = None, agreement: float | None = None) -> ExportReport:
    """ONNX of ``model`` at ``path`` (atomically, only if onnxruntime agrees with PyTorch on
    ``images`` test images, on at least ``agreement`` of them; both default to the config's
    task's :class:`ExportSettings`); raises ExportParityError / ExportWriteError / ValueError
    otherwise."""
    settings = task_registry.get(cfg.TASK).export_settings(cfg)
    inputs = check_images(dataset, images or settings.check_images)
    tolerance = Tolerance(min_top1_agreement=settings.min_agreement if agreement is None else agreement)
    _, report = export_onnx(model, inputs, path, opset=settings.opset, weight_format=settings.weight_format,
                            tolerance=tolerance, metadata=export_metadata(cfg, dataset), threads=threads)
    return report
