"""The ONNX graph under construction: names, constants, nodes, and quantized tensors.

A value of the graph is a float tensor (its name), a :class:`QTensor` (a uint8 tensor with
its scale and zero point, as an activation quantizer leaves it), or a static Python value
(shapes).  Integer runtimes fuse ``DequantizeLinear -> op -> QuantizeLinear`` into one
integer kernel, so the builder writes exactly that: a quantizer emits ``QuantizeLinear``
(and an integer ``Clip`` for grids narrower than 8 bits), and each float consumer of a
QTensor gets its own ``DequantizeLinear``.  Ops that only move values (slicing, padding
with the zero point, max-pooling, reshapes) run on the integers directly.

Activations are stored as uint8 for every grid: unsigned ones with zero point 0 (a ReLU
before them is then free), signed ones with zero point 128, so that a residual add of
two of them is one QLinearAdd (both operands must have the same type).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import fx, nn

from .integer import UINT8_MAX, zero_point
from .lsq import LsqQuantizer
from .modules import QuantLayerMixin
from .weight_format import stored_integers, zero_points


@dataclass(frozen=True)
class QTensor:
    """An integer activation: uint8 ``name``, dequantized as (q - zero_point) * scale."""

    name: str
    scale: str  # initializer names
    zero_point: str
    quantizer: LsqQuantizer
    zero_point_value: int


class GraphBuilder:
    """Accumulates nodes and initializers; emitters (:mod:`quant.onnx_emitters`) call it."""

    def __init__(self, gm: fx.GraphModule, results: dict, opset: int, batch: int, weight_format: str):
        self.gm = gm
        self.results = results
        self.opset = opset
        self.batch = batch
        self.weight_format = weight_format
        self.nodes: list = []
        self.initializers: list = []
        self.values: dict[fx.Node, Any] = {}  # fx node -> str | QTensor | static value
        self._names: set[str] = set()
        self.output_shape: tuple = ()

    # -- naming and constants ---------------------------------------------------------------
    def unique(self, base: str) -> str:
        base = base.replace("/", ".") or "v"
        name, i = base, 1
        while name in self._names:
            name, i = f"{base}_{i}", i + 1
        self._names.add(name)
        return name

    def const(self, base: str, array) -> str:
        from onnx import numpy_helper

        name = self.unique(base)
        if isinstance(array, torch.Tensor):
            array = array.detach().cpu().numpy()
        self.initializers.append(numpy_helper.from_array(np.array(array, order="C"), name))  # keeps 0-d
        return name

    def op(self, op_type: str, inputs: list[str], base: str, **attrs) -> str:
        from onnx import helper

        out = self.unique(base)
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=self.unique(f"{base}.{op_type}"), **attrs))
        return out

    def ints(self, base: str, values) -> str:
        return self.const(base, np.array(list(values), dtype=np.int64))

    # -- values -----------------------------------------------------------------------------
    def value_in(self, arg) -> str | QTensor:
        value = self.values.get(arg) if isinstance(arg, fx.Node) else None
        if not isinstance(value, (str, QTensor)):
            raise ValueError(f"export expected a tensor input, got {arg!r}")
        return value

    def tensor_in(self, arg) -> str:
        """A float tensor input (an integer one gets its own DequantizeLinear)."""
        value = self.value_in(arg)
        return self.dequantize(value) if isinstance(value, QTensor) else value

    def on_grid(self, arg, emit):
        """Apply ``emit(name, zero_point_name)`` to the integers of a QTensor (the result stays
        on its grid) or to a float tensor (zero point None)."""
        value = self.value_in(arg)
        if isinstance(value, QTensor):
            return replace(value, name=emit(value.name, value.zero_point))
        return emit(value, None)

    def operand(self, arg, base: str) -> str:
        """A tensor input, or a Python number as a float constant."""
        if isinstance(arg, fx.Node) and isinstance(self.values.get(arg), (str, QTensor)):
            return self.tensor_in(arg)
        value = self.values.get(arg, arg) if isinstance(arg, fx.Node) else arg
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return self.const(f"{base}.const", np.array(value, dtype=np.float32))
        raise ValueError(f"export cannot use {value!r} as an operand at {base!r}")

    def shape_of(self, node) -> tuple:
        return tuple(self.results[node].shape)

    def reshape_to_result(self, node, x: str) -> str:
        """Reshape ``x`` to ``node``'s traced output shape, keeping the batch dimension dynamic."""
        shape = self.shape_of(node)
        if not shape or shape[0] != self.batch:
            raise ValueError(f"export supports reshapes that keep the batch dimension first (node {node.name!r})")
        return self.op("Reshape", [x, self.ints(f"{node.name}.shape", (-1, *shape[1:]))], node.name)

    def clip(self, x: str, low, high, base: str) -> str:
        inputs = [x, self.const(f"{base}.min", np.array(low, np.float32)) if low is not None else ""]
        if high is not None:
            inputs.append(self.const(f"{base}.max", np.array(high, np.float32)))
        return self.op("Clip", inputs, base)

    # -- quantized activations ---------------------------------------------------------------
    def quantize(self, x: str, quantizer: LsqQuantizer, base: str) -> QTensor:
        """QuantizeLinear to uint8 at the learned step size, then an integer Clip to the grid."""
        qn, qp = quantizer.qrange()
        zp = zero_point(quantizer)
        scale = self.const(f"{base}.scale", np.array(float(quantizer.scale().detach().cpu()[0]), np.float32))
        zp_name = self.const(f"{base}.zero_point", np.array(zp, np.uint8))
        q = self.op("QuantizeLinear", [x, scale, zp_name], f"{base}.q")
        low, high = zp - qn, zp + qp
        if (low, high) != (0, UINT8_MAX):
            q = self.op("Clip", [q, self.const(f"{base}.qmin", np.array(low, np.uint8)),
                                 self.const(f"{base}.qmax", np.array(high, np.uint8))], f"{base}.grid")
        return QTensor(q, scale, zp_name, quantizer, zp)

    def dequantize(self, value: QTensor) -> str:
        return self.op("DequantizeLinear", [value.name, value.scale, value.zero_point], f"{value.name}.dq")

    def layer_input(self, arg, layer: nn.Module, base: str) -> str:
        """The float input of ``layer``: dequantized from its input quantizer's integers."""
        quantizer = getattr(layer, "input_quantizer", None)
        value = self.value_in(arg)
        if quantizer is not None and not (isinstance(value, QTensor) and value.quantizer is quantizer):
            raise ValueError(f"layer {base!r} reads a tensor that its input quantizer did not quantize; "
                             f"prepare the model with quant.prepare_qat")
        return self.tensor_in(arg)

    # -- quantized weights and biases --------------------------------------------------------
    def weight(self, layer: nn.Module, base: str) -> str:
        """Integer initializer + DequantizeLinear (or the float weight for a float layer)."""
        weight, _ = _weight_and_bias(layer)
        quantizer = getattr(layer, "weight_quantizer", None)
        if quantizer is None:
            return self.const(f"{base}.weight", weight)
        q, scale = quantizer.to_integer(weight.detach())
        stored = stored_integers(q.cpu().numpy(), quantizer.bits, self.weight_format)
        channels = scale.numel() if quantizer.per_channel else None
        scale = scale.float().cpu().numpy()
        inputs = [self.const(f"{base}.weight_int{quantizer.bits}", stored),
                  self.const(f"{base}.weight_scale", scale if channels else scale.reshape(())),
                  self.const(f"{base}.weight_zero_point", zero_points(stored, channels))]
        return self.op("DequantizeLinear", inputs, f"{base}.weight_dq", **({"axis": 0} if channels else {}))

    def bias(self, layer: nn.Module, base: str) -> list[str]:
        """No input, a float bias, or int32 + DequantizeLinear at s_x * s_w (the QDQ bias form)."""
        _, bias = _weight_and_bias(layer)
        if bias is None:
            return []
        q = layer.integer_bias() if isinstance(layer, QuantLayerMixin) else None
        if q is None:
            return [self.const(f"{base}.bias", bias)]
        q = q.to(torch.int32)  # the int32 grid s_x * s_w, as evaluation adds it
        scale = layer.bias_scale().float().cpu().numpy()
        per_channel = scale.size > 1
        inputs = [self.const(f"{base}.bias_int32", q),
                  self.const(f"{base}.bias_scale", scale if per_channel else scale.reshape(()))]
        return [self.op("DequantizeLinear", inputs, f"{base}.bias_dq", **({"axis": 0} if per_channel else {}))]


def _weight_and_bias(layer: nn.Module):
    if isinstance(layer, QuantLayerMixin):
        weight, bias = layer.folded_weight_and_bias()
    else:
        weight, bias = layer.weight, layer.bias
    return weight.detach(), None if bias is None else bias.detach()
