"""Export a classifier (float or QAT) of a config to ONNX, checked on the config's test images.

Used by the classification and qat tasks (``Task.export``, export at the end of QAT) and the
benchmarks.  Metadata records what a deployment needs besides the graph: classes, input size
and normalisation.
"""
from __future__ import annotations

import json
from pathlib import Path

from torch import nn

from quant.export import DEFAULT_OPSET, ExportReport, Tolerance, export_onnx
from tasks.classification.data import detect_format
from tasks.classification.task import class_names
from tasks.classification.input_config import input_config
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


def export_options(cfg) -> dict:
    """opset and weight format of the config's QUANT section (float classifiers: defaults)."""
    quant = cfg.get("QUANT")
    if quant is None:
        return {"opset": DEFAULT_OPSET}
    return {"opset": int(quant.OPSET), "weight_format": str(quant.EXPORT_FORMAT)}


def check_count(cfg, default: int = 512) -> int:
    quant = cfg.get("QUANT")
    return int(quant.EXPORT_CHECK_IMAGES) if quant is not None else default


def min_agreement(cfg, given: float | None = None) -> float:
    """The top-1 agreement the export needs: ``given`` (``--min-agreement``), else the config's
    ``QUANT.EXPORT_MIN_AGREEMENT``, else the library's default."""
    if given is not None:
        return float(given)
    quant = cfg.get("QUANT")
    return float(quant.EXPORT_MIN_AGREEMENT) if quant is not None else Tolerance().min_top1_agreement


def export_classifier(model: nn.Module, cfg, dataset, path: str | Path | None, images: int | None = None,
                      threads: int | None = None, agreement: float | None = None) -> ExportReport:
    """ONNX of ``model`` at ``path`` (atomically, only if onnxruntime agrees with PyTorch on
    ``images`` test images, on at least :func:`min_agreement` of them); raises
    ExportParityError / ExportWriteError / ValueError otherwise."""
    inputs = check_images(dataset, images or check_count(cfg))
    tolerance = Tolerance(min_top1_agreement=min_agreement(cfg, agreement))
    _, report = export_onnx(model, inputs, path, metadata=export_metadata(cfg, dataset), threads=threads,
                            tolerance=tolerance, **export_options(cfg))
    return report
