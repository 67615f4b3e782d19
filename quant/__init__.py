"""Low-bit quantization-aware training: LSQ quantizers, model conversion, calibration, ONNX export.

Modules: ``lsq`` (the quantizer), ``modules`` (quantized and BN-folded layers), ``integer``
(the deployed kernels' arithmetic, which evaluation computes), ``graph`` (where the
quantizers go), ``prepare`` (the bits policy), ``calibrate``; the export:
``export`` (entry point and parity gate), ``onnx_model`` / ``onnx_builder`` /
``onnx_emitters`` (graph building), ``weight_format`` (int8 / packed int4),
``onnx_runtime`` (sessions and the optimised graph's kernels).

Knows nothing about tasks or optimizers; raises ValueError/FileNotFoundError for bad input.
"""
from .calibrate import activation_quantizers, calibrate
from .lsq import (MIN_STEP_SIZE, SUPPORTED_BITS, LsqQuantizer, check_bits, lsq_fake_quantize, quant_range,
                  step_size_parameters, stored_bits)
from .modules import QuantAdd, QuantConv2d, QuantConvBn2d, QuantGlobalAvgPool, QuantLayerMixin, QuantLinear
from .prepare import format_summary, layer_bits, plan_quantization, prepare_qat, quantizable_layers, quantizer_roles


__all__ = [
    "LsqQuantizer", "QuantConv2d", "QuantConvBn2d", "QuantLinear", "QuantLayerMixin", "prepare_qat", "plan_quantization",
    "quantizable_layers", "format_summary", "layer_bits", "calibrate", "activation_quantizers",
    "check_bits", "quant_range", "lsq_fake_quantize", "step_size_parameters", "SUPPORTED_BITS",
    "MIN_STEP_SIZE", "QuantAdd", "QuantGlobalAvgPool", "quantizer_roles", "stored_bits",
]
