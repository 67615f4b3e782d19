"""Rewrite a float model into the QAT graph that mirrors the deployed integer graph.

An integer runtime (onnxruntime's QLinearConv / QLinearAdd / QGemm) keeps a tensor in
integers between layers, so the QAT model must quantize the same tensors, once each:

* every convolution is followed by its BatchNorm folded in (:class:`QuantConvBn2d`);
* the input of every quantized layer is quantized (the model input for the stem);
* every quantized convolution's output is quantized (after its ReLU when one follows:
  an unsigned grid then makes the ReLU free), so every convolution is an integer kernel;
* a residual add gets both operands and its output (after the ReLU) quantized; below
  :data:`WIDE_RESIDUAL_BELOW` bits at :data:`RESIDUAL_BITS` (see there), and a convolution
  that reads the residual stream at fewer bits then reads a requantized copy (its own input
  quantizer, right before it);
* ops that only move values (slicing, zero padding, max-pooling, flattening) keep a
  quantized tensor on its grid, so the quantizer sits before them, not after;
* the integer kernels learn the quantizers they read and write (:func:`link_integer_kernels`),
  so that evaluation computes the deployed arithmetic (:mod:`quant.integer`): each layer its
  output quantizer, and residual adds and global average pooling between quantized tensors
  become :class:`QuantAdd` / :class:`QuantGlobalAvgPool` nodes.

One :class:`LsqQuantizer` per quantized tensor (in ``act_quantizers``), shared by all its
consumers; layers keep a reference to their input's quantizer for the int32 bias grid.
The graph is a ``torch.fx`` trace: models with data-dependent Python control flow are
refused with a clear error.
"""
from __future__ import annotations

import operator

import torch
from torch import fx, nn
from torch.nn import functional as F

from .lsq import LsqQuantizer
from .modules import QUANTIZED_TYPES, QuantAdd, QuantConv2d, QuantConvBn2d, QuantGlobalAvgPool, QuantLayerMixin

#: Submodule holding the activation quantizers (one per quantized tensor, named by its node).
ACT_QUANTIZERS = "act_quantizers"
#: Submodule holding the parameter-free integer ops (QuantAdd, QuantGlobalAvgPool).
INTEGER_OPS = "integer_ops"

_RELU_MODULES = (nn.ReLU, nn.ReLU6)
_RELU_FUNCTIONS = {F.relu, torch.relu, F.relu6}
_RELU_METHODS = {"relu", "relu_"}
_ADD_FUNCTIONS = {operator.add, operator.iadd, torch.add}
_ADD_METHODS = {"add", "add_"}
#: Ops whose output values are some of their input values (or zeros): they keep a grid.
_GRID_MODULES = (nn.MaxPool2d, nn.Flatten, nn.Identity, nn.modules.dropout._DropoutNd)
_GRID_FUNCTIONS = {operator.getitem, torch.flatten, torch.reshape, F.max_pool2d, F.dropout}
_GRID_METHODS = {"view", "reshape", "flatten", "contiguous", "clone"}
#: Bits of the residual stream (the operands and sums of residual adds, the stem output) when
#: the body runs below WIDE_RESIDUAL_BELOW bits.  The skip connections carry the features from
#: block to block; at 2 bits that stream loses most of them (ResNet-20 W2A2 after 1 QAT epoch:
#: 24.7% top-1 with a 2-bit stream, 32.5% with an 8-bit one), and uint8 costs the QLinearAdds
#: nothing (they run on uint8 whatever the grid).  At 4 bits the body's own grid costs under a
#: point, so the graph there keeps it: a wide stream adds a requantization (3 small ops) per
#: block at batch 1, and its 8-bit grids make one-step rounding differences between PyTorch and
#: onnxruntime far more frequent (a 4-bit read amplifies them: parity fell below 99% on a
#: briefly trained W4A4 model).
RESIDUAL_BITS = 8
WIDE_RESIDUAL_BELOW = 4


class LeafTracer(fx.Tracer):
    """Keeps torch.nn layers, quantized layers and quantizers as single graph nodes."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, (QuantLayerMixin, LsqQuantizer)) or super().is_leaf_module(m, qualname)


def trace(model: nn.Module) -> fx.GraphModule:
    """``model`` as an fx.GraphModule (same submodule names; the class name is kept)."""
    try:
        graph = LeafTracer().trace(model)
    except Exception as err:  # fx raises many types for data-dependent control flow
        raise ValueError(
            f"cannot trace {type(model).__name__} with torch.fx ({type(err).__name__}: {err}); "
            f"QAT and export support models without data-dependent Python control flow"
        ) from err
    return fx.GraphModule(model, graph, class_name=type(model).__name__)


def build_qat_graph(model: nn.Module, plans) -> fx.GraphModule:
    """The QAT graph of ``model`` (changed in place: pass a copy) following ``plans``
    (:class:`quant.prepare.LayerPlan` per Conv2d/Linear)."""
    gm = trace(model)
    by_name = {p.name: p for p in plans}
    calls = _call_counts(gm)
    layers: list[fx.Node] = []
    for node in list(gm.graph.nodes):
        plan = by_name.get(node.target) if node.op == "call_module" else None
        if plan is None or (plan.w_bits is None and plan.a_bits is None):
            continue
        if calls[node.target] > 1:
            raise ValueError(f"layer {node.target!r} is called more than once in forward; a quantized "
                             f"tensor needs one layer per call (add it to QUANT.SKIP to keep it float)")
        _replace_layer(gm, node, plan, calls)
        layers.append(node)
    missing = [p.name for p in plans if (p.w_bits, p.a_bits) != (None, None)
               and p.name not in {n.target for n in layers}]
    if missing:
        raise ValueError(f"layers {missing} are not called as modules in forward (a bare Conv2d/Linear: "
                         f"wrap it in nn.Sequential); they cannot be quantized")
    placer = _QuantizerPlacer(gm)
    for node in layers:  # inputs first: the first and last layers' bits win on their inputs
        plan = by_name[node.target]
        if plan.a_bits is not None:
            gm.get_submodule(node.target).attach_input_quantizer(placer.ensure(node.args[0], plan.a_bits))
    body_bits = [by_name[n.target].a_bits for n in layers if by_name[n.target].reason == "body"]
    bits = next((b for b in body_bits if b is not None), None)
    if bits is not None:
        for node in layers:
            if isinstance(gm.get_submodule(node.target), QuantConv2d):
                placer.ensure(_after_relu(gm, node), bits)
        for node in list(gm.graph.nodes):
            if _is_add(node) and placer.touches_quantized(node):
                for tensor in (node.args[0], node.args[1], _after_relu(gm, node)):
                    placer.widen(tensor, RESIDUAL_BITS if bits < WIDE_RESIDUAL_BELOW else bits)
    link_integer_kernels(gm, placer)
    gm.delete_all_unused_submodules()
    gm.graph.lint()
    gm.recompile()
    return gm


def _call_counts(gm: fx.GraphModule) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in gm.graph.nodes:
        if node.op == "call_module":
            counts[node.target] = counts.get(node.target, 0) + 1
    return counts


def _replace_layer(gm: fx.GraphModule, node: fx.Node, plan, calls) -> None:
    """Swap the float layer at ``node`` for its quantized type, folding a following BN."""
    layer = gm.get_submodule(node.target)
    bn_node = _sole_user(node)
    bn = gm.get_submodule(bn_node.target) if bn_node is not None and bn_node.op == "call_module" else None
    foldable = (type(layer) is nn.Conv2d and isinstance(bn, nn.BatchNorm2d) and calls[bn_node.target] == 1
                and bn.track_running_stats and bn.num_features == layer.out_channels)
    if foldable:
        new = QuantConvBn2d.from_float(layer, plan.w_bits, plan.per_channel, bn=bn)
        bn_node.replace_all_uses_with(node)
        gm.graph.erase_node(bn_node)
    else:
        new = QUANTIZED_TYPES[type(layer)].from_float(layer, plan.w_bits, plan.per_channel)
    parent, _, attr = node.target.rpartition(".")
    setattr(gm.get_submodule(parent), attr, new)


def _sole_user(node: fx.Node) -> fx.Node | None:
    return next(iter(node.users)) if len(node.users) == 1 else None


def _is_relu(gm: fx.GraphModule, node: fx.Node) -> bool:
    if node.op == "call_module":
        return isinstance(gm.get_submodule(node.target), _RELU_MODULES)
    if node.op == "call_function":
        return node.target in _RELU_FUNCTIONS
    return node.op == "call_method" and node.target in _RELU_METHODS


def _is_relu6(gm: fx.GraphModule, node: fx.Node) -> bool:
    return (node.op == "call_module" and isinstance(gm.get_submodule(node.target), nn.ReLU6)) or (
        node.op == "call_function" and node.target is F.relu6)


def _after_relu(gm: fx.GraphModule, node: fx.Node) -> fx.Node:
    """``node``'s ReLU when it is its only consumer (the quantizer goes after it), else ``node``."""
    user = _sole_user(node)
    return user if user is not None and _is_relu(gm, user) else node


def _is_add(node: fx.Node) -> bool:
    is_add = ((node.op == "call_function" and node.target in _ADD_FUNCTIONS)
              or (node.op == "call_method" and node.target in _ADD_METHODS))
    return (is_add and len(node.args) == 2 and all(isinstance(a, fx.Node) for a in node.args)
            and node.kwargs.get("alpha", 1) == 1)


def link_integer_kernels(gm: fx.GraphModule, placer: "_QuantizerPlacer") -> None:
    """Give every integer kernel of the final graph the quantizers it reads and writes."""
    for node in list(gm.graph.nodes):
        out, relu = placer.written_quantizer(node)
        if node.op == "call_module" and isinstance(gm.get_submodule(node.target), QuantLayerMixin):
            gm.get_submodule(node.target).attach_output_quantizer(out, relu)
            continue
        kind = QuantAdd if _is_add(node) else QuantGlobalAvgPool if _is_global_avgpool(gm, node) else None
        operands = node.args[:2] if kind is QuantAdd else node.args[:1]
        inputs = [placer.quantizer_node(a) if isinstance(a, fx.Node) else None for a in operands]
        if kind is None or out is None or any(q is None or placer.source(a) is not q
                                              for a, q in zip(operands, inputs)):
            continue
        target = f"{INTEGER_OPS}.{node.name}"
        gm.add_submodule(target, kind(tuple(gm.get_submodule(q.target) for q in inputs), out, relu))
        with gm.graph.inserting_before(node):
            op = gm.graph.call_module(target, tuple(operands))
        node.replace_all_uses_with(op)
        gm.graph.erase_node(node)


def _is_global_avgpool(gm: fx.GraphModule, node: fx.Node) -> bool:
    if node.op == "call_module":
        pool = gm.get_submodule(node.target)
        return isinstance(pool, nn.AdaptiveAvgPool2d) and pool.output_size in (1, (1, 1))
    size = node.args[1] if len(node.args) > 1 else node.kwargs.get("output_size")
    return node.op == "call_function" and node.target is F.adaptive_avg_pool2d and size in (1, (1, 1))


class _QuantizerPlacer:
    """Inserts one activation quantizer per tensor, reusing the one a tensor already has."""

    def __init__(self, gm: fx.GraphModule):
        self.gm = gm
        params = next(gm.parameters(), None)
        self.device = params.device if params is not None else None
        gm.add_submodule(ACT_QUANTIZERS, nn.Module())

    def is_quantizer(self, node: fx.Node) -> bool:
        return node.op == "call_module" and isinstance(self.gm.get_submodule(node.target), LsqQuantizer)

    def keeps_grid(self, node: fx.Node) -> bool:
        if node.op == "call_module":
            return isinstance(self.gm.get_submodule(node.target), _GRID_MODULES)
        if node.op == "call_function" and node.target is F.pad:
            value = node.args[3] if len(node.args) > 3 else node.kwargs.get("value", 0.0)
            mode = node.args[2] if len(node.args) > 2 else node.kwargs.get("mode", "constant")
            return mode == "constant" and not value
        if node.op == "call_function":
            return node.target in _GRID_FUNCTIONS
        return node.op == "call_method" and node.target in _GRID_METHODS

    def source(self, node: fx.Node) -> fx.Node:
        """The node that computed ``node``'s values (walking back through grid-keeping ops)."""
        while self.keeps_grid(node) and node.args and isinstance(node.args[0], fx.Node):
            node = node.args[0]
        return node

    def touches_quantized(self, node: fx.Node) -> bool:
        return any(self.is_quantizer(self.source(a)) for a in node.args if isinstance(a, fx.Node))

    def quantizer_node(self, node: fx.Node) -> fx.Node | None:
        """The quantizer node of ``node``'s tensor, or None."""
        source = self.source(node)
        if self.is_quantizer(source):
            return source
        return next((u for u in source.users if self.is_quantizer(u)), None)

    def written_quantizer(self, node: fx.Node) -> tuple[LsqQuantizer | None, bool]:
        """``(quantizer, through_relu)`` when ``node``'s result (after its ReLU, if that is its
        only consumer) goes to one activation quantizer and nowhere else, else ``(None, False)``."""
        after = _after_relu(self.gm, node)
        users = list(after.users)
        if len(users) != 1 or not self.is_quantizer(users[0]) or (after is not node and _is_relu6(self.gm, after)):
            return None, False  # a ReLU6's clip at 6 is a float op between them
        return self.gm.get_submodule(users[0].target), after is not node

    def ensure(self, node: fx.Node, bits: int) -> LsqQuantizer:
        """The quantizer of ``node``'s tensor, inserted right after its source if it has none."""
        existing = self.quantizer_node(node)
        if existing is not None:
            return self.gm.get_submodule(existing.target)
        source = self.source(node)
        quantizer = LsqQuantizer(bits, signed=True, activation=True)
        if self.device is not None:
            quantizer.to(self.device)
        target = f"{ACT_QUANTIZERS}.{source.name}"
        self.gm.add_submodule(target, quantizer)
        with self.gm.graph.inserting_after(source):
            qnode = self.gm.graph.call_module(target, (source,))
        source.replace_all_uses_with(qnode, delete_user_cb=lambda user: user is not qnode)
        return quantizer

    def widen(self, node: fx.Node, bits: int) -> None:
        """Carry ``node``'s tensor at ``bits`` or more.  A narrower quantizer already on it
        moves to the layers that read the tensor through it: they now read a requantized copy."""
        narrow_node = self.quantizer_node(node)
        if narrow_node is None:
            self.ensure(node, bits)
            return
        narrow = self.gm.get_submodule(narrow_node.target)
        if narrow.bits >= bits:
            return
        readers = [n for n in self.gm.graph.nodes if n.op == "call_module"
                   and getattr(self.gm.get_submodule(n.target), "input_quantizer", None) is narrow]
        producer = narrow_node.args[0]
        narrow_node.replace_all_uses_with(producer)
        self.gm.graph.erase_node(narrow_node)
        self.gm.delete_submodule(narrow_node.target)
        self.ensure(producer, bits)
        target = f"{narrow_node.target}_{narrow.bits}bit"
        self.gm.add_submodule(target, narrow)
        for reader in readers:
            tensor = reader.args[0]
            requantized = next((u for u in tensor.users if u.op == "call_module" and u.target == target), None)
            if requantized is None:
                with self.gm.graph.inserting_before(reader):
                    requantized = self.gm.graph.call_module(target, (tensor,))
            reader.replace_input_with(tensor, requantized)
