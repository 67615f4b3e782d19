"""ONNX export of float and QAT models, with integer weights and an onnxruntime parity check.

The graph is written by walking a ``torch.fx`` trace of the model (quantized layers are
leaves) rather than through ``torch.onnx.export``: that gives direct control of what a
deployment needs and the generic exporters do not produce, namely

* quantized weights stored as integer initializers (int8, or int4 packed two per byte at
  opset >= 21 for <= 4-bit weights) followed by ``DequantizeLinear`` with per-tensor or
  per-channel (axis 0) scales;
* activations as ``[Clip ->] QuantizeLinear -> DequantizeLinear`` at the learned step size
  (the Clip narrows the 8-bit integer range to the layer's 2..7-bit grid);
* metadata recording every layer's bits.

Before anything is written, onnxruntime runs the graph on a batch and the file is refused if
its outputs disagree with the PyTorch model beyond :class:`Tolerance`.  Layers and functions
outside the supported set raise ``ValueError`` naming the node (extend ``_MODULE_EMITTERS``
/ ``_FUNCTION_EMITTERS`` to add one).
"""
from __future__ import annotations

import json
import operator
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import fx, nn
from torch.nn import functional as F

from .lsq import LsqQuantizer
from .modules import INT32_MAX, INT32_MIN, QuantLayerMixin
from .prepare import layer_bits

#: Opset used when the caller does not choose: the first with int4 (packed) tensors.
DEFAULT_OPSET = 21
MIN_OPSET = 13  # per-channel DequantizeLinear (axis) needs 13


class ExportParityError(ValueError):
    """onnxruntime's outputs disagree with PyTorch's beyond the tolerance; nothing was written."""


@dataclass(frozen=True)
class Tolerance:
    """When an exported graph counts as the same model as the PyTorch one.

    ``min_top1_agreement``: fraction of check inputs whose arg-max must match (a rounding tie
    resolved differently by onnxruntime may flip a near-tie image, nothing more);
    ``max_rel_mean_diff``: mean |onnx - torch| over the outputs divided by mean |torch|.
    """

    min_top1_agreement: float = 0.99
    max_rel_mean_diff: float = 0.05


@dataclass
class ExportReport:
    path: str | None
    bytes: int
    opset: int
    top1_agreement: float
    rel_mean_diff: float
    max_abs_diff: float
    checked_inputs: int
    layers: dict

    def as_dict(self) -> dict:
        return asdict(self)


# ------------------------------------------------------------------------------------------
# public entry points
# ------------------------------------------------------------------------------------------
def export_onnx(
    model: nn.Module,
    check_inputs: torch.Tensor,
    path: str | os.PathLike | None = None,
    opset: int = DEFAULT_OPSET,
    tolerance: Tolerance = Tolerance(),
    metadata: dict[str, str] | None = None,
    threads: int | None = None,
) -> tuple[bytes, ExportReport]:
    """Export ``model`` (float or prepared for QAT) to ONNX and check it with onnxruntime.

    ``check_inputs`` is a batch of real model inputs (N, C, H, W); the graph has a dynamic
    batch dimension.  ``path`` (optional) is written atomically only after the parity check
    passed.  Returns the serialized model and a report.
    """
    if not (MIN_OPSET <= int(opset) <= 23):
        raise ValueError(f"opset={opset} is not supported: use {MIN_OPSET}..23 (21+ packs int4 weights)")
    if check_inputs.dim() < 2 or check_inputs.shape[0] < 1:
        raise ValueError("check_inputs must be a batch of model inputs with a leading batch dimension")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        onnx_model = build_onnx_model(model, check_inputs[:2].to(device), opset, metadata)
        data = onnx_model.SerializeToString()
        with torch.no_grad():
            reference = _forward_in_chunks(model, check_inputs, device)
    finally:
        model.train(was_training)
    got = run_onnx(data, check_inputs.cpu().numpy(), threads=threads)
    agreement, rel_diff, max_diff = _compare(got, reference)
    report = ExportReport(None, len(data), int(opset), agreement, rel_diff, max_diff,
                          int(got.shape[0]), layer_bits(model))
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
    """Write ``data`` to a temp file beside ``path`` and rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def run_onnx(model: bytes | str | os.PathLike, inputs: np.ndarray, batch: int = 256,
             threads: int | None = None) -> np.ndarray:
    """Run an exported model on CPU with onnxruntime (in chunks of ``batch``)."""
    session = onnx_session(model, threads)
    name = session.get_inputs()[0].name
    outs = [session.run(None, {name: inputs[i:i + batch].astype(np.float32)})[0]
            for i in range(0, len(inputs), batch)]
    return np.concatenate(outs)


def onnx_session(model: bytes | str | os.PathLike, threads: int | None = None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def _forward_in_chunks(model, inputs, device, batch: int = 256) -> np.ndarray:
    outs = []
    for i in range(0, len(inputs), batch):
        out = model(inputs[i:i + batch].to(device))
        if not isinstance(out, torch.Tensor):
            raise ValueError("export supports models that return one tensor")
        outs.append(out.float().cpu().numpy())
    return np.concatenate(outs)


def _compare(got: np.ndarray, ref: np.ndarray) -> tuple[float, float, float]:
    """(top-1 agreement, mean |diff| / mean |ref|, max |diff|); non-finite outputs fail."""
    if got.shape != ref.shape:
        raise ExportParityError(f"onnxruntime output shape {got.shape} != PyTorch {ref.shape}; no file written")
    diff = np.abs(got - ref)
    agreement = float((got.argmax(axis=1) == ref.argmax(axis=1)).mean()) if ref.ndim >= 2 else 1.0
    rel = float(diff.mean() / max(float(np.abs(ref).mean()), 1e-12))
    if not np.isfinite(got).all():
        rel = float("inf")
    return agreement, rel, float(diff.max())


# ------------------------------------------------------------------------------------------
# graph construction
# ------------------------------------------------------------------------------------------
class _LeafTracer(fx.Tracer):
    """Keeps quantized layers (and torch.nn layers) as single graph nodes."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, QuantLayerMixin) or super().is_leaf_module(m, qualname)


class _Recorder(fx.Interpreter):
    """Runs the traced graph once and keeps every node's result (shapes and static values)."""

    def __init__(self, gm):
        super().__init__(gm)
        self.results: dict[fx.Node, Any] = {}

    def run_node(self, n):
        result = super().run_node(n)
        self.results[n] = result
        return result


def trace(model: nn.Module) -> fx.GraphModule:
    try:
        graph = _LeafTracer().trace(model)
    except Exception as err:  # fx raises many types for data-dependent control flow
        raise ValueError(
            f"cannot trace {type(model).__name__} with torch.fx for export ({type(err).__name__}: "
            f"{err}); export supports models without data-dependent Python control flow"
        ) from err
    return fx.GraphModule(model, graph)


def build_onnx_model(model: nn.Module, sample: torch.Tensor, opset: int = DEFAULT_OPSET,
                     metadata: dict[str, str] | None = None):
    """Build (not check, not write) the ONNX ModelProto of ``model`` in eval mode."""
    import onnx
    from onnx import TensorProto, helper

    _check_quantizers_ready(model)
    gm = trace(model)
    recorder = _Recorder(gm)
    with torch.no_grad():
        recorder.run(sample)
    builder = _GraphBuilder(gm, recorder.results, opset, batch=sample.shape[0])
    for node in gm.graph.nodes:
        builder.emit(node)
    shape = ["batch", *sample.shape[1:]]
    graph = helper.make_graph(
        builder.nodes, type(model).__name__,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", *builder.output_shape[1:]])],
        initializer=builder.initializers,
    )
    onnx_model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="bsam-suite quant.export"
    )
    meta = {"quant_layers": json.dumps(layer_bits(model), sort_keys=True)}
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


class _GraphBuilder:
    """Turns fx nodes into ONNX nodes; one ``_emit_*`` per supported layer or function."""

    def __init__(self, gm: fx.GraphModule, results: dict, opset: int, batch: int):
        self.gm = gm
        self.results = results
        self.opset = opset
        self.batch = batch
        self.nodes: list = []
        self.initializers: list = []
        self.values: dict[fx.Node, Any] = {}  # fx node -> ONNX value name (str) or a static value
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

    # -- fx node dispatch -----------------------------------------------------------------
    def emit(self, node: fx.Node) -> None:
        if node.op == "placeholder":
            if any(n.op == "placeholder" for n in self.values):
                raise ValueError("export supports models with a single input tensor")
            self.values[node] = "input"
        elif node.op == "output":
            out = node.args[0]
            if not isinstance(out, fx.Node) or not isinstance(self.values.get(out), str):
                raise ValueError("export supports models that return one tensor")
            self.nodes.append(_identity(self.values[out], "output"))
            self.output_shape = tuple(self.results[out].shape)
        elif node.op == "get_attr":
            value = _fetch_attr(self.gm, node.target)
            self.values[node] = self.const(node.target, value) if isinstance(value, torch.Tensor) else value
        elif not self._produces_tensor(node):
            self.values[node] = self.results[node]  # shapes, sizes: static at export
        elif node.op == "call_module":
            module = self.gm.get_submodule(node.target)
            self.values[node] = self._dispatch(_MODULE_EMITTERS, type(module), node, module,
                                               f"layer {node.target!r} ({type(module).__name__})")
        elif node.op == "call_function":
            self.values[node] = self._dispatch(_FUNCTION_EMITTERS, node.target, node, None,
                                               f"function {getattr(node.target, '__name__', node.target)}")
        elif node.op == "call_method":
            self.values[node] = self._dispatch(_METHOD_EMITTERS, node.target, node, None,
                                               f"tensor method .{node.target}()")
        else:  # pragma: no cover - fx has no other node kinds
            raise ValueError(f"unexpected fx node {node.op}")

    def _produces_tensor(self, node) -> bool:
        return isinstance(self.results.get(node), torch.Tensor)

    def _dispatch(self, table: dict, key, node, module, what: str) -> str:
        emitter = table.get(key)
        if emitter is None and isinstance(key, type):
            emitter = next((e for t, e in table.items() if isinstance(t, type) and issubclass(key, t)), None)
        if emitter is None:
            raise ValueError(f"export does not support {what} at node {node.name!r}")
        return emitter(self, node, module) if module is not None else emitter(self, node)

    # -- helpers for emitters ----------------------------------------------------------------
    def tensor_in(self, arg) -> str:
        value = self.values.get(arg) if isinstance(arg, fx.Node) else None
        if not isinstance(value, str):
            raise ValueError(f"export expected a tensor input, got {arg!r}")
        return value

    def operand(self, arg, base: str) -> str:
        """A tensor input, or a Python number as a float constant."""
        if isinstance(arg, fx.Node) and isinstance(self.values.get(arg), str):
            return self.values[arg]
        value = self.values.get(arg, arg) if isinstance(arg, fx.Node) else arg
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return self.const(f"{base}.const", np.array(value, dtype=np.float32))
        raise ValueError(f"export cannot use {value!r} as an operand at {base!r}")

    def shape_of(self, node) -> tuple:
        return tuple(self.results[node].shape)

    def ints(self, base: str, values) -> str:
        return self.const(base, np.array(list(values), dtype=np.int64))

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

    # -- quantized tensors ------------------------------------------------------------------
    def quantized_weight(self, layer: nn.Module, base: str) -> str:
        """Integer initializer + DequantizeLinear (or the float weight for a float layer)."""
        quantizer = getattr(layer, "weight_quantizer", None)
        if quantizer is None:
            return self.const(f"{base}.weight", layer.weight)
        q, scale = quantizer.to_integer(layer.weight.detach())
        q = q.cpu().numpy().astype(np.int8)
        if quantizer.bits <= 4 and self.opset >= 21:
            import ml_dtypes  # installed with onnx; numpy has no int4

            q = q.astype(ml_dtypes.int4)  # serialized packed, two values per byte
        scale = scale.float().cpu().numpy()
        scale = scale if quantizer.per_channel else scale.reshape(())
        inputs = [self.const(f"{base}.weight_int{quantizer.bits}", q), self.const(f"{base}.weight_scale", scale)]
        attrs = {"axis": 0} if quantizer.per_channel else {}
        return self.op("DequantizeLinear", inputs, f"{base}.weight_dq", **attrs)

    def bias(self, layer: nn.Module, base: str) -> list[str]:
        """No input, a float bias, or int32 + DequantizeLinear at s_x * s_w (the QDQ bias form)."""
        if layer.bias is None:
            return []
        scale = layer.bias_scale() if isinstance(layer, QuantLayerMixin) else None
        if scale is None:
            return [self.const(f"{base}.bias", layer.bias)]
        q = torch.clamp((layer.bias.detach() / scale).round(), INT32_MIN, INT32_MAX).to(torch.int32)
        scale = scale.float().cpu().numpy()
        per_channel = scale.size > 1
        inputs = [self.const(f"{base}.bias_int32", q),
                  self.const(f"{base}.bias_scale", scale if per_channel else scale.reshape(()))]
        return [self.op("DequantizeLinear", inputs, f"{base}.bias_dq", **({"axis": 0} if per_channel else {}))]

    def quantized_activation(self, x: str, quantizer: LsqQuantizer | None, base: str) -> str:
        """[Clip ->] QuantizeLinear -> DequantizeLinear at the learned step size."""
        if quantizer is None:
            return x
        qn, qp = quantizer.qrange()
        scale = float(quantizer.scale().detach().cpu()[0])
        signed = quantizer.is_signed
        type_lo, type_hi = (-128, 127) if signed else (0, 255)
        if (-qn, qp) != (type_lo, type_hi):
            x = self.clip(x, -qn * scale, qp * scale, f"{base}.input_clip")
        s = self.const(f"{base}.input_scale", np.array(scale, np.float32))
        zp = self.const(f"{base}.input_zero_point", np.array(0, np.int8 if signed else np.uint8))
        q = self.op("QuantizeLinear", [x, s, zp], f"{base}.input_q")
        return self.op("DequantizeLinear", [q, s, zp], f"{base}.input_dq")


def _identity(x: str, out: str):
    from onnx import helper

    return helper.make_node("Identity", [x], [out], name="output.Identity")


def _fetch_attr(gm: fx.GraphModule, target: str):
    value = gm
    for part in target.split("."):
        value = getattr(value, part)
    return value


# ------------------------------------------------------------------------------------------
# emitters: layers (call_module)
# ------------------------------------------------------------------------------------------
def _emit_conv2d(b: _GraphBuilder, node, conv: nn.Conv2d) -> str:
    if conv.padding_mode != "zeros":
        raise ValueError(f"export supports zero padding only; {node.target!r} uses {conv.padding_mode!r}")
    x = b.quantized_activation(b.tensor_in(node.args[0]), getattr(conv, "input_quantizer", None), node.target)
    w = b.quantized_weight(conv, node.target)
    inputs = [x, w] + b.bias(conv, node.target)
    left, right, top, bottom = conv._reversed_padding_repeated_twice
    return b.op("Conv", inputs, node.target, kernel_shape=list(conv.kernel_size), strides=list(conv.stride),
                pads=[top, left, bottom, right], dilations=list(conv.dilation), group=conv.groups)


def _emit_linear(b: _GraphBuilder, node, linear: nn.Linear) -> str:
    x = b.quantized_activation(b.tensor_in(node.args[0]), getattr(linear, "input_quantizer", None), node.target)
    w = b.quantized_weight(linear, node.target)
    if len(b.shape_of(node.args[0])) == 2:
        return b.op("Gemm", [x, w] + b.bias(linear, node.target), node.target, transB=1)
    wt = b.op("Transpose", [w], f"{node.target}.weight_t", perm=[1, 0])
    y = b.op("MatMul", [x, wt], node.target)
    for bias in b.bias(linear, node.target):
        y = b.op("Add", [y, bias], f"{node.target}.add")
    return y


def _emit_batchnorm(b: _GraphBuilder, node, bn: nn.modules.batchnorm._BatchNorm) -> str:
    if bn.running_mean is None:
        raise ValueError(f"export needs running statistics in {node.target!r} (track_running_stats=False)")
    c = bn.num_features
    weight = bn.weight if bn.weight is not None else torch.ones(c)
    bias = bn.bias if bn.bias is not None else torch.zeros(c)
    t = node.target
    inputs = [b.tensor_in(node.args[0]), b.const(f"{t}.weight", weight), b.const(f"{t}.bias", bias),
              b.const(f"{t}.running_mean", bn.running_mean), b.const(f"{t}.running_var", bn.running_var)]
    return b.op("BatchNormalization", inputs, t, epsilon=float(bn.eps))


def _emit_maxpool(b: _GraphBuilder, node, pool: nn.MaxPool2d) -> str:
    return _maxpool(b, node, pool.kernel_size, pool.stride, pool.padding, pool.dilation, pool.ceil_mode)


def _maxpool(b, node, kernel, stride, padding, dilation, ceil_mode) -> str:
    k, s, p, d = (_pair(v) for v in (kernel, stride or kernel, padding, dilation))
    return b.op("MaxPool", [b.tensor_in(node.args[0])], node.name, kernel_shape=k, strides=s,
                pads=[p[0], p[1], p[0], p[1]], dilations=d, ceil_mode=int(ceil_mode))


def _emit_avgpool(b: _GraphBuilder, node, pool: nn.AvgPool2d) -> str:
    if pool.divisor_override is not None:
        raise ValueError(f"export does not support AvgPool2d divisor_override ({node.target!r})")
    k, s, p = (_pair(v) for v in (pool.kernel_size, pool.stride or pool.kernel_size, pool.padding))
    return b.op("AveragePool", [b.tensor_in(node.args[0])], node.name, kernel_shape=k, strides=s,
                pads=[p[0], p[1], p[0], p[1]], ceil_mode=int(pool.ceil_mode),
                count_include_pad=int(pool.count_include_pad))


def _emit_adaptive_avgpool(b: _GraphBuilder, node, pool=None) -> str:
    source = node.args[0]
    out_size = _pair(pool.output_size if pool is not None else node.args[1])
    in_h, in_w = b.shape_of(source)[-2:]
    out_h = in_h if out_size[0] is None else out_size[0]  # None keeps that input size
    out_w = in_w if out_size[1] is None else out_size[1]
    x = b.tensor_in(source)
    if (out_h, out_w) == (1, 1):
        return b.op("GlobalAveragePool", [x], node.name)
    if in_h % out_h or in_w % out_w:
        raise ValueError(f"export supports adaptive average pooling to a divisor of the input size ({node.name!r})")
    k = [in_h // out_h, in_w // out_w]
    return b.op("AveragePool", [x], node.name, kernel_shape=k, strides=k)


def _unary(op_type: str, **attrs) -> Callable:
    def emit(b: _GraphBuilder, node, module=None) -> str:
        return b.op(op_type, [b.tensor_in(node.args[0])], node.name, **attrs)

    return emit


def _passthrough(b: _GraphBuilder, node, module=None) -> str:
    return b.tensor_in(node.args[0])


def _emit_relu6(b: _GraphBuilder, node, module=None) -> str:
    return b.clip(b.tensor_in(node.args[0]), 0.0, 6.0, node.name)


def _emit_hardtanh(b: _GraphBuilder, node, module) -> str:
    return b.clip(b.tensor_in(node.args[0]), module.min_val, module.max_val, node.name)


def _emit_leaky_relu(b: _GraphBuilder, node, module) -> str:
    return b.op("LeakyRelu", [b.tensor_in(node.args[0])], node.name, alpha=float(module.negative_slope))


def _emit_silu(b: _GraphBuilder, node, module=None) -> str:
    x = b.tensor_in(node.args[0])
    return b.op("Mul", [x, b.op("Sigmoid", [x], f"{node.name}.sigmoid")], node.name)


def _emit_flatten_module(b: _GraphBuilder, node, module: nn.Flatten) -> str:
    return _flatten(b, node, module.start_dim, module.end_dim)


def _flatten(b: _GraphBuilder, node, start_dim: int, end_dim: int) -> str:
    rank = len(b.shape_of(node.args[0]))
    if start_dim % rank >= 1 and end_dim % rank == rank - 1:
        return b.op("Flatten", [b.tensor_in(node.args[0])], node.name, axis=start_dim % rank)
    return b.reshape_to_result(node, b.tensor_in(node.args[0]))


_MODULE_EMITTERS: dict[type, Callable] = {
    nn.Conv2d: _emit_conv2d,  # QuantConv2d is a subclass
    nn.Linear: _emit_linear,  # QuantLinear is a subclass
    nn.modules.batchnorm._BatchNorm: _emit_batchnorm,
    nn.ReLU: _unary("Relu"),
    nn.ReLU6: _emit_relu6,
    nn.Hardtanh: _emit_hardtanh,  # after ReLU6 in lookup order: ReLU6 is a Hardtanh subclass
    nn.LeakyReLU: _emit_leaky_relu,
    nn.Sigmoid: _unary("Sigmoid"),
    nn.Tanh: _unary("Tanh"),
    nn.SiLU: _emit_silu,
    nn.Hardswish: _unary("HardSwish"),
    nn.Hardsigmoid: _unary("HardSigmoid", alpha=1.0 / 6.0, beta=0.5),
    nn.MaxPool2d: _emit_maxpool,
    nn.AvgPool2d: _emit_avgpool,
    nn.AdaptiveAvgPool2d: _emit_adaptive_avgpool,
    nn.Flatten: _emit_flatten_module,
    nn.modules.dropout._DropoutNd: _passthrough,
    nn.Identity: _passthrough,
}


# ------------------------------------------------------------------------------------------
# emitters: functions and tensor methods
# ------------------------------------------------------------------------------------------
def _binary(op_type: str) -> Callable:
    def emit(b: _GraphBuilder, node) -> str:
        a, c = node.args[0], node.args[1]
        if node.kwargs.get("alpha", 1) != 1:
            raise ValueError(f"export does not support add/sub with alpha ({node.name!r})")
        return b.op(op_type, [b.operand(a, node.name), b.operand(c, node.name)], node.name)

    return emit


def _emit_cat(b: _GraphBuilder, node) -> str:
    tensors = node.args[0]
    dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
    rank = len(b.shape_of(tensors[0]))
    return b.op("Concat", [b.tensor_in(t) for t in tensors], node.name, axis=int(dim) % rank)


def _emit_flatten_function(b: _GraphBuilder, node) -> str:
    start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
    end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
    if start == 0:
        raise ValueError(f"export does not support flattening the batch dimension ({node.name!r})")
    return _flatten(b, node, start, end)


def _emit_reshape(b: _GraphBuilder, node) -> str:
    return b.reshape_to_result(node, b.tensor_in(node.args[0]))


def _emit_mean(b: _GraphBuilder, node) -> str:
    dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
    keepdim = node.args[2] if len(node.args) > 2 else node.kwargs.get("keepdim", False)
    rank = len(b.shape_of(node.args[0]))
    if dims is None or 0 in [int(d) % rank for d in ([dims] if isinstance(dims, int) else dims)]:
        raise ValueError(f"export supports means over non-batch dimensions only ({node.name!r})")
    axes = [int(d) % rank for d in ([dims] if isinstance(dims, int) else dims)]
    x = b.tensor_in(node.args[0])
    if b.opset >= 18:
        return b.op("ReduceMean", [x, b.ints(f"{node.name}.axes", axes)], node.name, keepdims=int(bool(keepdim)))
    return b.op("ReduceMean", [x], node.name, axes=axes, keepdims=int(bool(keepdim)))


def _emit_adaptive_avgpool_function(b: _GraphBuilder, node) -> str:
    return _emit_adaptive_avgpool(b, node)


def _emit_max_pool_function(b: _GraphBuilder, node) -> str:
    args = list(node.args[1:]) + [None] * 5
    kw = node.kwargs
    kernel = args[0] if args[0] is not None else kw["kernel_size"]
    stride = args[1] if args[1] is not None else kw.get("stride")
    padding = args[2] if args[2] is not None else kw.get("padding", 0)
    dilation = args[3] if args[3] is not None else kw.get("dilation", 1)
    ceil_mode = args[4] if args[4] is not None else kw.get("ceil_mode", False)
    return _maxpool(b, node, kernel, stride, padding, dilation, ceil_mode)


def _emit_pad(b: _GraphBuilder, node) -> str:
    pad = list(node.args[1] if len(node.args) > 1 else node.kwargs["pad"])
    mode = node.args[2] if len(node.args) > 2 else node.kwargs.get("mode", "constant")
    value = node.args[3] if len(node.args) > 3 else node.kwargs.get("value", 0.0)
    if mode != "constant":
        raise ValueError(f"export supports constant padding only ({node.name!r} uses {mode!r})")
    rank = len(b.shape_of(node.args[0]))
    begins, ends = [0] * rank, [0] * rank
    for i in range(len(pad) // 2):  # F.pad lists (left, right) pairs from the last dim backwards
        begins[rank - 1 - i], ends[rank - 1 - i] = pad[2 * i], pad[2 * i + 1]
    if begins[0] or ends[0]:
        raise ValueError(f"export does not support padding the batch dimension ({node.name!r})")
    inputs = [b.tensor_in(node.args[0]), b.ints(f"{node.name}.pads", begins + ends),
              b.const(f"{node.name}.value", np.array(value or 0.0, np.float32))]
    return b.op("Pad", inputs, node.name, mode="constant")


def _emit_getitem(b: _GraphBuilder, node) -> str:
    """Basic slicing of a tensor (``x[:, :, ::2, ::2]``); integer indexing is not supported."""
    index = node.args[1] if isinstance(node.args[1], tuple) else (node.args[1],)
    if any(i is Ellipsis for i in index) or not all(isinstance(i, slice) for i in index):
        raise ValueError(f"export supports tensor slicing with ':' steps only ({node.name!r})")
    shape = b.shape_of(node.args[0])
    starts, ends, axes, steps = [], [], [], []
    for axis, sl in enumerate(index):
        if sl == slice(None):
            continue
        if axis == 0:
            raise ValueError(f"export does not support slicing the batch dimension ({node.name!r})")
        start, stop, step = sl.indices(shape[axis])
        starts.append(start), ends.append(stop), axes.append(axis), steps.append(step)
    x = b.tensor_in(node.args[0])
    if not axes:
        return x
    inputs = [x, b.ints(f"{node.name}.starts", starts), b.ints(f"{node.name}.ends", ends),
              b.ints(f"{node.name}.axes", axes), b.ints(f"{node.name}.steps", steps)]
    return b.op("Slice", inputs, node.name)


def _emit_functional_relu6(b: _GraphBuilder, node) -> str:
    return _emit_relu6(b, node)


def _emit_functional_hardtanh(b: _GraphBuilder, node) -> str:
    low = node.args[1] if len(node.args) > 1 else node.kwargs.get("min_val", -1.0)
    high = node.args[2] if len(node.args) > 2 else node.kwargs.get("max_val", 1.0)
    return b.clip(b.tensor_in(node.args[0]), low, high, node.name)


def _emit_dropout_function(b: _GraphBuilder, node) -> str:
    return _passthrough(b, node)


_FUNCTION_EMITTERS: dict[Callable, Callable] = {
    operator.add: _binary("Add"), operator.iadd: _binary("Add"), torch.add: _binary("Add"),
    operator.sub: _binary("Sub"), torch.sub: _binary("Sub"),
    operator.mul: _binary("Mul"), operator.imul: _binary("Mul"), torch.mul: _binary("Mul"),
    operator.truediv: _binary("Div"), torch.div: _binary("Div"),
    torch.cat: _emit_cat, torch.concat: _emit_cat,
    torch.flatten: _emit_flatten_function,
    torch.reshape: _emit_reshape,
    torch.mean: _emit_mean,
    torch.relu: _unary("Relu"), F.relu: _unary("Relu"),
    F.relu6: _emit_functional_relu6, F.hardtanh: _emit_functional_hardtanh,
    torch.sigmoid: _unary("Sigmoid"), F.sigmoid: _unary("Sigmoid"),
    torch.tanh: _unary("Tanh"),
    F.silu: _emit_silu, F.hardswish: _unary("HardSwish"),
    F.adaptive_avg_pool2d: _emit_adaptive_avgpool_function,
    F.max_pool2d: _emit_max_pool_function,
    F.dropout: _emit_dropout_function,
    F.pad: _emit_pad,
    operator.getitem: _emit_getitem,
}

_METHOD_EMITTERS: dict[str, Callable] = {
    "view": _emit_reshape, "reshape": _emit_reshape,
    "flatten": _emit_flatten_function,
    "mean": _emit_mean,
    "relu": _unary("Relu"), "relu_": _unary("Relu"), "sigmoid": _unary("Sigmoid"),
    "add": _binary("Add"), "add_": _binary("Add"), "mul": _binary("Mul"), "mul_": _binary("Mul"),
    "contiguous": _passthrough, "clone": _passthrough,
}


def _pair(v) -> list:
    return list(v) if isinstance(v, (tuple, list)) else [v, v]
