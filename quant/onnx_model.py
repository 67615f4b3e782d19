"""Assemble the ONNX ModelProto of a (float or QAT) model: graph, opset, IR version, metadata.

The graph is written by walking a ``torch.fx`` trace of the model (quantized layers and
quantizers are leaves) rather than through ``torch.onnx.export``: that gives direct control
of what an integer deployment needs (see :mod:`quant.onnx_builder`).
"""
from __future__ import annotations

import json
from typing import Any

import torch
from torch import fx, nn

from .graph import trace
from .lsq import LsqQuantizer
from .onnx_builder import GraphBuilder
from .onnx_emitters import emit_node
from .prepare import layer_bits
from .weight_format import check_weight_format

#: Opset used when the caller does not choose (21: the first with int4 tensors).
DEFAULT_OPSET = 21
MIN_OPSET = 13  # per-channel DequantizeLinear (axis) needs 13
MAX_OPSET = 23


class _Recorder(fx.Interpreter):
    """Runs the traced graph once and keeps every node's result (shapes and static values)."""

    def __init__(self, gm):
        super().__init__(gm)
        self.results: dict[fx.Node, Any] = {}

    def run_node(self, n):
        result = super().run_node(n)
        self.results[n] = result
        return result


def check_opset(opset: int) -> int:
    if not (MIN_OPSET <= int(opset) <= MAX_OPSET):
        raise ValueError(f"opset={opset} is not supported: use {MIN_OPSET}..{MAX_OPSET} (21+ packs int4 weights)")
    return int(opset)


def build_onnx_model(model: nn.Module, sample: torch.Tensor, opset: int = DEFAULT_OPSET,
                     metadata: dict[str, str] | None = None, weight_format: str = "int8"):
    """Build (not check, not write) the ONNX ModelProto of ``model`` in eval mode.

    ``weight_format``: ``int8`` (integer kernels) or ``int4`` (packed, smallest file); see
    :mod:`quant.weight_format`.  The IR version is the lowest the opset needs, so the file
    loads in every runtime that supports that opset."""
    import onnx
    from onnx import TensorProto, helper

    check_weight_format(weight_format, check_opset(opset))
    _check_quantizers_ready(model)
    gm = trace(model)
    recorder = _Recorder(gm)
    with torch.no_grad():
        recorder.run(sample)
    builder = GraphBuilder(gm, recorder.results, opset, sample.shape[0], weight_format)
    for node in gm.graph.nodes:
        emit_node(builder, node)
    shape = ["batch", *sample.shape[1:]]
    graph = helper.make_graph(
        builder.nodes, type(model).__name__,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", *builder.output_shape[1:]])],
        initializer=builder.initializers,
    )
    opsets = [helper.make_opsetid("", opset)]
    onnx_model = helper.make_model(graph, opset_imports=opsets, producer_name="bsam-suite quant.export",
                                   ir_version=helper.find_min_ir_version_for(opsets))
    layers = layer_bits(model)
    meta = ({"quant_layers": json.dumps(layers, sort_keys=True), "weight_format": weight_format}
            if any(info["w_bits"] for info in layers.values()) else {"weight_format": "float"})
    meta.update({k: str(v) for k, v in (metadata or {}).items()})
    helper.set_model_props(onnx_model, meta)
    onnx.checker.check_model(onnx_model)
    return onnx_model


def _check_quantizers_ready(model: nn.Module) -> None:
    for name, m in model.named_modules():
        if isinstance(m, LsqQuantizer) and not m.is_initialized:
            raise ValueError(
                f"quantizer {name!r} has no step size yet: calibrate the model or load a trained "
                f"QAT checkpoint before exporting"
            )
