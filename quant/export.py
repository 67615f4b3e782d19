"""ONNX export of float and QAT models, refused unless the deployed run matches PyTorch.

:func:`export_onnx` builds the graph (:mod:`quant.onnx_model`), loads it in onnxruntime as a
deployment does (full graph optimisation, which fuses the Q/DQ pattern into integer
kernels), runs it on real inputs and compares with the PyTorch model; only then is the
file written (atomically, mode 0644).  The report says how many integer kernels the
optimised graph runs and how closely it agrees.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .onnx_model import DEFAULT_OPSET, MIN_OPSET, build_onnx_model, check_opset
from .onnx_runtime import compare, deployed_session, kernel_counts, onnx_session, run_onnx, run_session
from .prepare import layer_bits
from .weight_format import WEIGHT_FORMATS

__all__ = ["export_onnx", "ExportParityError", "ExportWriteError", "ExportReport", "Tolerance", "build_onnx_model",
           "run_onnx", "onnx_session", "write_atomically", "DEFAULT_OPSET", "MIN_OPSET", "WEIGHT_FORMATS"]


class ExportParityError(ValueError):
    """onnxruntime's outputs disagree with PyTorch's beyond the tolerance; nothing was written."""


class ExportWriteError(ValueError):
    """The checked model could not be written (a folder there, no permission, disk full ...)."""


@dataclass(frozen=True)
class Tolerance:
    """When an exported graph counts as the same model as the PyTorch one.

    ``min_top1_agreement``: fraction of check inputs whose arg-max must match.  A QAT model's
    evaluation computes the integer kernels' own arithmetic (:mod:`quant.integer`), so only
    float layers (a float first or last layer, a float model) can flip a near-tie image;
    ``max_rel_mean_diff``: mean |onnx - torch| over the outputs divided by mean |torch|.
    """

    min_top1_agreement: float = 0.999
    max_rel_mean_diff: float = 0.05


@dataclass
class ExportReport:
    path: str | None
    bytes: int
    opset: int
    ir_version: int
    weight_format: str  # how quantized weights are stored: int8, int4, or float (no quantized layer)
    top1_agreement: float
    rel_mean_diff: float
    max_abs_diff: float
    checked_inputs: int
    integer_kernels: dict = field(default_factory=dict)  # op -> count in onnxruntime's optimised graph
    float_kernels: dict = field(default_factory=dict)  # float Conv/Gemm/MatMul left in it
    layers: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


def export_onnx(
    model: nn.Module,
    check_inputs: torch.Tensor,
    path: str | os.PathLike | None = None,
    opset: int = DEFAULT_OPSET,
    tolerance: Tolerance = Tolerance(),
    metadata: dict[str, str] | None = None,
    threads: int | None = None,
    weight_format: str = "int8",
) -> tuple[bytes, ExportReport]:
    """Export ``model`` (float or prepared for QAT) to ONNX and check it with onnxruntime.

    ``check_inputs`` is a batch of real model inputs (N, C, H, W); the graph has a dynamic
    batch dimension.  ``path`` (optional) is written atomically only after the parity check
    passed.  Returns the serialized model and a report.
    """
    check_opset(opset)
    if check_inputs.dim() < 2 or check_inputs.shape[0] < 1:
        raise ValueError("check_inputs must be a batch of model inputs with a leading batch dimension")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        onnx_model = build_onnx_model(model, check_inputs[:2].to(device), opset, metadata, weight_format)
        data = onnx_model.SerializeToString()
        with torch.no_grad():
            reference = _forward_in_chunks(model, check_inputs, device)
    finally:
        model.train(was_training)
    session, ops = deployed_session(data, threads)
    got = run_session(session, check_inputs.cpu().numpy())
    try:
        agreement, rel_diff, max_diff = compare(got, reference)
    except ValueError as err:
        raise ExportParityError(f"{err}; no file written") from None
    integer, floating = kernel_counts(ops)
    layers = layer_bits(model)
    stored = weight_format if any(info["w_bits"] for info in layers.values()) else "float"
    report = ExportReport(None, len(data), int(opset), int(onnx_model.ir_version), stored, agreement,
                          rel_diff, max_diff, int(got.shape[0]), integer, floating, layers)
    if agreement < tolerance.min_top1_agreement or not rel_diff <= tolerance.max_rel_mean_diff:
        raise ExportParityError(
            f"onnxruntime disagrees with PyTorch on {report.checked_inputs} check inputs: top-1 "
            f"agreement {agreement:.4f} (need >= {tolerance.min_top1_agreement}), relative mean "
            f"|diff| {rel_diff:.2e} (need <= {tolerance.max_rel_mean_diff}); no file written"
        )
    if path is not None:
        report.path = str(write_atomically(path, data))
    return data, report


def write_atomically(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to a temp file beside ``path`` and rename it into place (mode 0644);
    a failure is an :class:`ExportWriteError` naming the file, and leaves nothing behind."""
    path, tmp = Path(path), None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; a model file is for others to read
        os.replace(tmp, path)
    except OSError as err:
        raise ExportWriteError(f"cannot write {path}: {err.strerror or err}; nothing was written there "
                               f"(choose a writable file path)") from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _forward_in_chunks(model, inputs, device, batch: int = 256) -> np.ndarray:
    outs = []
    for i in range(0, len(inputs), batch):
        out = model(inputs[i:i + batch].to(device))
        if not isinstance(out, torch.Tensor):
            raise ValueError("export supports models that return one tensor")
        outs.append(out.float().cpu().numpy())
    return np.concatenate(outs)
