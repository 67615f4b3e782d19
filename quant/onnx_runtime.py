"""Running an exported model in onnxruntime, and reading what its optimiser made of it.

onnxruntime rewrites the graph when it loads it: ``DequantizeLinear -> Conv -> QuantizeLinear``
becomes one QLinearConv, and so on.  Whether a model runs on integer kernels is therefore a
property of the *optimised* graph, which :func:`deployed_session` writes out and counts.
"""
from __future__ import annotations

import os
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

#: Ops of the optimised graph that compute on integers.
INTEGER_KERNELS = ("QLinearConv", "QLinearAdd", "QGemm", "QLinearMatMul", "ConvInteger", "MatMulInteger",
                   "MatMulIntegerToFloat", "QLinearGlobalAveragePool", "QLinearAveragePool", "QLinearConcat")
#: Ops of the optimised graph that are float convolutions or matrix products.
FLOAT_KERNELS = ("Conv", "FusedConv", "Gemm", "FusedGemm", "MatMul", "FusedMatMul")


def onnx_session(model: bytes | str | os.PathLike, threads: int | None = None, optimized_path: str | None = None):
    """A CPU session with onnxruntime's default (full) optimisation, as a deployment gets."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
    if optimized_path:
        options.optimized_model_filepath = str(optimized_path)
        options.log_severity_level = 3  # its "hardware specific optimisations" warning is expected
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def deployed_session(model: bytes | str | os.PathLike, threads: int | None = None):
    """``(session, op counts of its optimised graph)``."""
    import onnx

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "optimized.onnx"
        session = onnx_session(model, threads, optimized_path=path)
        graph = onnx.load(str(path), load_external_data=False).graph
    return session, Counter(node.op_type for node in graph.node)


def kernel_counts(ops: Counter) -> tuple[dict[str, int], dict[str, int]]:
    """``(integer kernels, float conv/matmul kernels)`` of an optimised graph's op counts."""
    return ({k: ops[k] for k in INTEGER_KERNELS if ops[k]}, {k: ops[k] for k in FLOAT_KERNELS if ops[k]})


def run_session(session, inputs: np.ndarray, batch: int = 256) -> np.ndarray:
    name = session.get_inputs()[0].name
    outs = [session.run(None, {name: inputs[i:i + batch].astype(np.float32)})[0]
            for i in range(0, len(inputs), batch)]
    return np.concatenate(outs)


def run_onnx(model: bytes | str | os.PathLike, inputs: np.ndarray, batch: int = 256,
             threads: int | None = None) -> np.ndarray:
    """Run an exported model on CPU with onnxruntime (in chunks of ``batch``)."""
    return run_session(onnx_session(model, threads), inputs, batch)


def compare(got: np.ndarray, ref: np.ndarray) -> tuple[float, float, float]:
    """(arg-max agreement, mean |diff| / mean |ref|, max |diff|); non-finite outputs fail.

    Agreement is over classes for (N, classes) outputs, and over the positions of each
    channel's peak for maps (N, C, H, W: a pose model's joint heatmaps)."""
    if got.shape != ref.shape:
        raise ValueError(f"onnxruntime output shape {got.shape} != PyTorch {ref.shape}")
    diff = np.abs(got - ref)
    if ref.ndim > 2:
        agreement = float((_peaks(got) == _peaks(ref)).mean())
    else:
        agreement = float((got.argmax(axis=1) == ref.argmax(axis=1)).mean()) if ref.ndim == 2 else 1.0
    rel = float(diff.mean() / max(float(np.abs(ref).mean()), 1e-12))
    if not np.isfinite(got).all():
        rel = float("inf")
    return agreement, rel, float(diff.max())


def _peaks(maps: np.ndarray) -> np.ndarray:
    return maps.reshape(maps.shape[0], maps.shape[1], -1).argmax(axis=2)
