"""ONNX emitters: one function per supported layer, function and tensor method.

:func:`emit_node` turns one fx node into ONNX nodes through a :class:`GraphBuilder`.
Layers and functions outside these tables raise ``ValueError`` naming the node (add an
emitter to ``MODULE_EMITTERS`` / ``FUNCTION_EMITTERS`` / ``METHOD_EMITTERS`` to support one).
Ops that only move values take ``b.on_grid`` so that they also run on quantized integers.
"""
from __future__ import annotations

import operator
from typing import Callable

import numpy as np
import torch
from torch import fx, nn
from torch.nn import functional as F

from .lsq import LsqQuantizer
from .modules import QuantAdd, QuantGlobalAvgPool
from .onnx_builder import GraphBuilder, QTensor


def emit_node(b: GraphBuilder, node: fx.Node) -> None:
    if node.op == "placeholder":
        if any(n.op == "placeholder" for n in b.values):
            raise ValueError("export supports models with a single input tensor")
        b.values[node] = "input"
    elif node.op == "output":
        out = node.args[0]
        if not isinstance(out, fx.Node) or not isinstance(b.values.get(out), (str, QTensor)):
            raise ValueError("export supports models that return one tensor")
        b.op("Identity", [b.tensor_in(out)], "output_identity")
        b.nodes[-1].output[0] = "output"
        b.output_shape = tuple(b.results[out].shape)
    elif node.op == "get_attr":
        value = _fetch_attr(b.gm, node.target)
        b.values[node] = b.const(node.target, value) if isinstance(value, torch.Tensor) else value
    elif not isinstance(b.results.get(node), torch.Tensor):
        b.values[node] = b.results[node]  # shapes, sizes: static at export
    elif node.op == "call_module":
        module = b.gm.get_submodule(node.target)
        b.values[node] = _dispatch(b, MODULE_EMITTERS, type(module), node, module,
                                   f"layer {node.target!r} ({type(module).__name__})")
    elif node.op == "call_function":
        b.values[node] = _dispatch(b, FUNCTION_EMITTERS, node.target, node, None,
                                   f"function {getattr(node.target, '__name__', node.target)}")
    elif node.op == "call_method":
        b.values[node] = _dispatch(b, METHOD_EMITTERS, node.target, node, None, f"tensor method .{node.target}()")
    else:  # pragma: no cover - fx has no other node kinds
        raise ValueError(f"unexpected fx node {node.op}")


def _dispatch(b: GraphBuilder, table: dict, key, node, module, what: str):
    emitter = table.get(key)
    if emitter is None and isinstance(key, type):
        emitter = next((e for t, e in table.items() if isinstance(t, type) and issubclass(key, t)), None)
    if emitter is None:
        raise ValueError(f"export does not support {what} at node {node.name!r}")
    return emitter(b, node, module) if module is not None else emitter(b, node)


def _fetch_attr(gm: fx.GraphModule, target: str):
    value = gm
    for part in target.split("."):
        value = getattr(value, part)
    return value


# ------------------------------------------------------------------------------------------
# emitters: layers (call_module)
# ------------------------------------------------------------------------------------------
def _emit_conv2d(b: GraphBuilder, node, conv: nn.Conv2d) -> str:
    if conv.padding_mode != "zeros":
        raise ValueError(f"export supports zero padding only; {node.target!r} uses {conv.padding_mode!r}")
    x = b.layer_input(node.args[0], conv, node.target)
    w = b.weight(conv, node.target)
    inputs = [x, w] + b.bias(conv, node.target)
    left, right, top, bottom = conv._reversed_padding_repeated_twice
    return b.op("Conv", inputs, node.target, kernel_shape=list(conv.kernel_size), strides=list(conv.stride),
                pads=[top, left, bottom, right], dilations=list(conv.dilation), group=conv.groups)


def _emit_conv_transpose2d(b: GraphBuilder, node, deconv: nn.ConvTranspose2d) -> str:
    """Float transposed convolution (a pose model's upsampling head)."""
    if deconv.padding_mode != "zeros":
        raise ValueError(f"export supports zero padding only; {node.target!r} uses {deconv.padding_mode!r}")
    inputs = [b.tensor_in(node.args[0]), b.const(f"{node.target}.weight", deconv.weight)]
    if deconv.bias is not None:
        inputs.append(b.const(f"{node.target}.bias", deconv.bias))
    ph, pw = deconv.padding
    return b.op("ConvTranspose", inputs, node.target, kernel_shape=list(deconv.kernel_size),
                strides=list(deconv.stride), pads=[ph, pw, ph, pw], output_padding=list(deconv.output_padding),
                dilations=list(deconv.dilation), group=deconv.groups)


def _emit_linear(b: GraphBuilder, node, linear: nn.Linear) -> str:
    x = b.layer_input(node.args[0], linear, node.target)
    w = b.weight(linear, node.target)
    if len(b.shape_of(node.args[0])) == 2:
        return b.op("Gemm", [x, w] + b.bias(linear, node.target), node.target, transB=1)
    wt = b.op("Transpose", [w], f"{node.target}.weight_t", perm=[1, 0])
    y = b.op("MatMul", [x, wt], node.target)
    for bias in b.bias(linear, node.target):
        y = b.op("Add", [y, bias], f"{node.target}.add")
    return y


def _emit_batchnorm(b: GraphBuilder, node, bn: nn.modules.batchnorm._BatchNorm) -> str:
    if bn.running_mean is None:
        raise ValueError(f"export needs running statistics in {node.target!r} (track_running_stats=False)")
    c = bn.num_features
    weight = bn.weight if bn.weight is not None else torch.ones(c)
    bias = bn.bias if bn.bias is not None else torch.zeros(c)
    t = node.target
    inputs = [b.tensor_in(node.args[0]), b.const(f"{t}.weight", weight), b.const(f"{t}.bias", bias),
              b.const(f"{t}.running_mean", bn.running_mean), b.const(f"{t}.running_var", bn.running_var)]
    return b.op("BatchNormalization", inputs, t, epsilon=float(bn.eps))


def _emit_maxpool(b: GraphBuilder, node, pool: nn.MaxPool2d) -> str:
    return _maxpool(b, node, pool.kernel_size, pool.stride, pool.padding, pool.dilation, pool.ceil_mode)


def _maxpool(b, node, kernel, stride, padding, dilation, ceil_mode):
    k, s, p, d = (_pair(v) for v in (kernel, stride or kernel, padding, dilation))
    return b.on_grid(node.args[0], lambda x, _: b.op(
        "MaxPool", [x], node.name, kernel_shape=k, strides=s, pads=[p[0], p[1], p[0], p[1]], dilations=d,
        ceil_mode=int(ceil_mode)))


def _emit_avgpool(b: GraphBuilder, node, pool: nn.AvgPool2d) -> str:
    if pool.divisor_override is not None:
        raise ValueError(f"export does not support AvgPool2d divisor_override ({node.target!r})")
    k, s, p = (_pair(v) for v in (pool.kernel_size, pool.stride or pool.kernel_size, pool.padding))
    return b.op("AveragePool", [b.tensor_in(node.args[0])], node.name, kernel_shape=k, strides=s,
                pads=[p[0], p[1], p[0], p[1]], ceil_mode=int(pool.ceil_mode),
                count_include_pad=int(pool.count_include_pad))


def _emit_adaptive_avgpool(b: GraphBuilder, node, pool=None) -> str:
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


def _emit_quant_add(b: GraphBuilder, node, add: QuantAdd) -> str:
    """Add of two dequantized tensors; onnxruntime fuses it (and the quantizer) into a QLinearAdd."""
    return b.op("Add", [b.tensor_in(node.args[0]), b.tensor_in(node.args[1])], node.name)


def _emit_quant_global_avgpool(b: GraphBuilder, node, pool: QuantGlobalAvgPool) -> str:
    return b.op("GlobalAveragePool", [b.tensor_in(node.args[0])], node.name)


def _unary(op_type: str, **attrs) -> Callable:
    def emit(b: GraphBuilder, node, module=None) -> str:
        return b.op(op_type, [b.tensor_in(node.args[0])], node.name, **attrs)

    return emit


def _passthrough(b: GraphBuilder, node, module=None):
    return b.value_in(node.args[0])


def _emit_relu(b: GraphBuilder, node, module=None):
    """A ReLU of an unsigned integer tensor changes nothing; otherwise a float Relu."""
    value = b.value_in(node.args[0])
    if isinstance(value, QTensor) and not value.quantizer.is_signed:
        return value
    return b.op("Relu", [b.tensor_in(node.args[0])], node.name)


def _emit_quantizer(b: GraphBuilder, node, quantizer: LsqQuantizer) -> QTensor:
    if not quantizer.activation:
        raise ValueError(f"weight quantizer {node.target!r} used on a tensor in forward")
    return b.quantize(b.tensor_in(node.args[0]), quantizer, node.target)


def _emit_relu6(b: GraphBuilder, node, module=None) -> str:
    return b.clip(b.tensor_in(node.args[0]), 0.0, 6.0, node.name)


def _emit_hardtanh(b: GraphBuilder, node, module) -> str:
    return b.clip(b.tensor_in(node.args[0]), module.min_val, module.max_val, node.name)


def _emit_leaky_relu(b: GraphBuilder, node, module) -> str:
    return b.op("LeakyRelu", [b.tensor_in(node.args[0])], node.name, alpha=float(module.negative_slope))


def _emit_silu(b: GraphBuilder, node, module=None) -> str:
    x = b.tensor_in(node.args[0])
    return b.op("Mul", [x, b.op("Sigmoid", [x], f"{node.name}.sigmoid")], node.name)


def _emit_flatten_module(b: GraphBuilder, node, module: nn.Flatten) -> str:
    return _flatten(b, node, module.start_dim, module.end_dim)


def _flatten(b: GraphBuilder, node, start_dim: int, end_dim: int):
    rank = len(b.shape_of(node.args[0]))
    if start_dim % rank >= 1 and end_dim % rank == rank - 1:
        return b.on_grid(node.args[0], lambda x, _: b.op("Flatten", [x], node.name, axis=start_dim % rank))
    return b.on_grid(node.args[0], lambda x, _: b.reshape_to_result(node, x))


MODULE_EMITTERS: dict[type, Callable] = {
    nn.Conv2d: _emit_conv2d,  # QuantConv2d is a subclass
    nn.Linear: _emit_linear,  # QuantLinear is a subclass
    nn.ConvTranspose2d: _emit_conv_transpose2d,
    nn.modules.batchnorm._BatchNorm: _emit_batchnorm,
    LsqQuantizer: _emit_quantizer,
    QuantAdd: _emit_quant_add,
    QuantGlobalAvgPool: _emit_quant_global_avgpool,
    nn.ReLU: _emit_relu,
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
    def emit(b: GraphBuilder, node) -> str:
        a, c = node.args[0], node.args[1]
        if node.kwargs.get("alpha", 1) != 1:
            raise ValueError(f"export does not support add/sub with alpha ({node.name!r})")
        return b.op(op_type, [b.operand(a, node.name), b.operand(c, node.name)], node.name)

    return emit


def _emit_cat(b: GraphBuilder, node) -> str:
    tensors = node.args[0]
    dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
    rank = len(b.shape_of(tensors[0]))
    return b.op("Concat", [b.tensor_in(t) for t in tensors], node.name, axis=int(dim) % rank)


def _emit_flatten_function(b: GraphBuilder, node) -> str:
    start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
    end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
    if start == 0:
        raise ValueError(f"export does not support flattening the batch dimension ({node.name!r})")
    return _flatten(b, node, start, end)


def _emit_reshape(b: GraphBuilder, node):
    return b.on_grid(node.args[0], lambda x, _: b.reshape_to_result(node, x))


def _emit_mean(b: GraphBuilder, node) -> str:
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


def _emit_adaptive_avgpool_function(b: GraphBuilder, node) -> str:
    return _emit_adaptive_avgpool(b, node)


def _emit_max_pool_function(b: GraphBuilder, node) -> str:
    args = list(node.args[1:]) + [None] * 5
    kw = node.kwargs
    kernel = args[0] if args[0] is not None else kw["kernel_size"]
    stride = args[1] if args[1] is not None else kw.get("stride")
    padding = args[2] if args[2] is not None else kw.get("padding", 0)
    dilation = args[3] if args[3] is not None else kw.get("dilation", 1)
    ceil_mode = args[4] if args[4] is not None else kw.get("ceil_mode", False)
    return _maxpool(b, node, kernel, stride, padding, dilation, ceil_mode)


def _emit_pad(b: GraphBuilder, node) -> str:
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
    pads = b.ints(f"{node.name}.pads", begins + ends)
    if value:  # a non-zero pad leaves the integer grid
        inputs = [b.tensor_in(node.args[0]), pads, b.const(f"{node.name}.value", np.array(value, np.float32))]
        return b.op("Pad", inputs, node.name, mode="constant")

    def pad(x, zero_point):
        zero = zero_point or b.const(f"{node.name}.value", np.array(0.0, np.float32))
        return b.op("Pad", [x, pads, zero], node.name, mode="constant")

    return b.on_grid(node.args[0], pad)


def _emit_getitem(b: GraphBuilder, node) -> str:
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
    if not axes:
        return b.value_in(node.args[0])
    bounds = [b.ints(f"{node.name}.starts", starts), b.ints(f"{node.name}.ends", ends),
              b.ints(f"{node.name}.axes", axes), b.ints(f"{node.name}.steps", steps)]
    return b.on_grid(node.args[0], lambda x, _: b.op("Slice", [x, *bounds], node.name))


def _emit_interpolate(b: GraphBuilder, node) -> str:
    """Nearest-neighbour resizing (HRNet's fusion) as ONNX Resize to the traced height and width
    with the batch size kept dynamic; PyTorch's 'nearest' is ONNX's asymmetric, floor rule."""
    mode = node.args[3] if len(node.args) > 3 else node.kwargs.get("mode", "nearest")
    if mode != "nearest":
        raise ValueError(f"export supports nearest interpolation only ({node.name!r} uses {mode!r})")
    spatial = b.ints(f"{node.name}.spatial", b.shape_of(node)[2:])

    def resize(x, _):
        shape = b.op("Shape", [x], f"{node.name}.shape")
        lead = b.op("Slice", [shape, b.ints(f"{node.name}.zero", [0]), b.ints(f"{node.name}.two", [2])],
                    f"{node.name}.lead")
        sizes = b.op("Concat", [lead, spatial], f"{node.name}.sizes", axis=0)
        return b.op("Resize", [x, "", "", sizes], node.name, mode="nearest",
                    coordinate_transformation_mode="asymmetric", nearest_mode="floor")

    return b.on_grid(node.args[0], resize)


def _emit_functional_relu6(b: GraphBuilder, node) -> str:
    return _emit_relu6(b, node)


def _emit_functional_hardtanh(b: GraphBuilder, node) -> str:
    low = node.args[1] if len(node.args) > 1 else node.kwargs.get("min_val", -1.0)
    high = node.args[2] if len(node.args) > 2 else node.kwargs.get("max_val", 1.0)
    return b.clip(b.tensor_in(node.args[0]), low, high, node.name)


def _emit_dropout_function(b: GraphBuilder, node) -> str:
    return _passthrough(b, node)


FUNCTION_EMITTERS: dict[Callable, Callable] = {
    operator.add: _binary("Add"), operator.iadd: _binary("Add"), torch.add: _binary("Add"),
    operator.sub: _binary("Sub"), torch.sub: _binary("Sub"),
    operator.mul: _binary("Mul"), operator.imul: _binary("Mul"), torch.mul: _binary("Mul"),
    operator.truediv: _binary("Div"), torch.div: _binary("Div"),
    torch.cat: _emit_cat, torch.concat: _emit_cat,
    torch.flatten: _emit_flatten_function,
    torch.reshape: _emit_reshape,
    torch.mean: _emit_mean,
    torch.relu: _emit_relu, F.relu: _emit_relu,
    F.relu6: _emit_functional_relu6, F.hardtanh: _emit_functional_hardtanh,
    torch.sigmoid: _unary("Sigmoid"), F.sigmoid: _unary("Sigmoid"),
    torch.tanh: _unary("Tanh"),
    F.silu: _emit_silu, F.hardswish: _unary("HardSwish"),
    F.adaptive_avg_pool2d: _emit_adaptive_avgpool_function,
    F.max_pool2d: _emit_max_pool_function,
    F.dropout: _emit_dropout_function,
    F.pad: _emit_pad,
    F.interpolate: _emit_interpolate,
    operator.getitem: _emit_getitem,
}

METHOD_EMITTERS: dict[str, Callable] = {
    "view": _emit_reshape, "reshape": _emit_reshape,
    "flatten": _emit_flatten_function,
    "mean": _emit_mean,
    "relu": _emit_relu, "relu_": _emit_relu, "sigmoid": _unary("Sigmoid"),
    "add": _binary("Add"), "add_": _binary("Add"), "mul": _binary("Mul"), "mul_": _binary("Mul"),
    "contiguous": _passthrough, "clone": _passthrough,
}


def _pair(v) -> list:
    return list(v) if isinstance(v, (tuple, list)) else [v, v]
