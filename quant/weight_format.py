"""How quantized weights are stored in the ONNX file: int8, or int4 packed two per byte.

* ``int8``: every weight as an int8 holding its 2..8-bit value.  onnxruntime runs these
  through its integer kernels (QLinearConv, QGemm): the fast format.
* ``int4``: <= 4-bit weights packed two per byte (ONNX int4, opset >= 21): the smallest
  file, but no runtime has int4 convolution kernels, so the weights are dequantized and
  the layer runs in float.  Weights of more than 4 bits stay int8.
"""
from __future__ import annotations

import numpy as np

WEIGHT_FORMATS = ("int8", "int4")
INT4_MIN_OPSET = 21


def check_weight_format(weight_format: str, opset: int) -> str:
    if weight_format not in WEIGHT_FORMATS:
        raise ValueError(f"weight format {weight_format!r} is not supported: use one of {', '.join(WEIGHT_FORMATS)}")
    if weight_format == "int4" and opset < INT4_MIN_OPSET:
        raise ValueError(f"int4 weights need opset >= {INT4_MIN_OPSET} (got {opset}): raise the opset or store int8")
    return weight_format


def stored_integers(q: np.ndarray, bits: int, weight_format: str) -> np.ndarray:
    """``q`` (integers in the ``bits`` signed range) in the array type the file stores."""
    q = q.astype(np.int8)
    if weight_format == "int4" and bits <= 4:
        import ml_dtypes  # installed with onnx; numpy has no int4

        return q.astype(ml_dtypes.int4)  # serialized packed, two values per byte
    return q


def zero_points(stored: np.ndarray, channels: int | None) -> np.ndarray:
    """Zero points of the stored weights' type (onnxruntime's fusions want them explicit)."""
    return np.zeros(() if channels is None else (channels,), dtype=stored.dtype)
