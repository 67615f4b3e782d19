"""Conv2d and Linear layers that compute what the deployed integer kernels compute.

They subclass the float layers, so the weight/bias parameter names stay the same: a float
state_dict loads into the converted model (the quantizers' step sizes are extra keys), and
optimizers, weight decay and SAM perturbations see the latent float weights as usual.

A layer quantizes its own weights; its input arrives already fake-quantized by the
activation quantizer that :mod:`quant.graph` placed on the tensor it reads (one quantizer
per tensor, shared by every consumer, as in the integer graph).  The layer keeps a
reference to that quantizer (not a submodule: it belongs to the graph) because the bias is
rounded to the int32 grid ``s_in * s_w``, which integer kernels add to their accumulator.

Training fake-quantizes (LSQ, straight-through gradients).  Evaluation without gradients
computes the deployed integer kernels instead (:mod:`quant.integer`): a layer that knows the
quantizer of the tensor it writes (the graph attaches it) returns that quantizer's grid values
exactly as onnxruntime's QLinearConv / QGemm rounds them; :class:`QuantAdd` and
:class:`QuantGlobalAvgPool` do the same for residual adds and the pooled features.

:class:`QuantConvBn2d` is a convolution with the BatchNorm that follows it folded in: its
weight quantizer sees, and evaluation computes, the folded weight and bias that the
integer kernel uses.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from . import integer
from .lsq import LsqQuantizer, check_bits, round_ste

#: Integer runtimes add the bias in the int32 accumulator: bias_int = round(b / (s_x * s_w)).
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


def _optional_bits(bits, what: str):
    """``None``/0 means "keep float"; anything else must be a supported bit width."""
    if bits is None or (bits == 0 and not isinstance(bits, bool)):
        return None
    return check_bits(bits, what)


class QuantLayerMixin:
    """What the quantized layers share: weight quantizer, input scale, integer bias."""

    weight_quantizer: LsqQuantizer | None

    def _add_weight_quantizer(self, w_bits, per_channel: bool) -> None:
        w_bits = _optional_bits(w_bits, "w_bits")
        weight = self.folded_weight_and_bias()[0].detach()
        channels = weight.shape[0] if per_channel else 1
        self.weight_quantizer = None if w_bits is None else LsqQuantizer(w_bits, True, channels)
        if self.weight_quantizer is not None:
            self.weight_quantizer.to(weight.device)
            self.weight_quantizer.init_from(weight)

    @property
    def input_quantizer(self) -> LsqQuantizer | None:
        """The activation quantizer of the tensor this layer reads (None: float input)."""
        return self.__dict__.get("_input_quantizer")

    def attach_input_quantizer(self, quantizer: LsqQuantizer | None) -> None:
        object.__setattr__(self, "_input_quantizer", quantizer)  # a reference, not a submodule

    def attach_output_quantizer(self, quantizer: LsqQuantizer | None, through_relu: bool = False) -> None:
        """The quantizer of the tensor this layer writes (after a ReLU when ``through_relu``):
        the integer kernel then requantizes into its grid."""
        object.__setattr__(self, "_output_quantizer", (quantizer, bool(through_relu)))

    @property
    def output_quantizer(self) -> LsqQuantizer | None:
        """The activation quantizer of the tensor this layer writes (None: none, or not only)."""
        return self.__dict__.get("_output_quantizer", (None, False))[0]

    #: Whether the runtime has this layer's integer kernel with a float output (QGemm does;
    #: a convolution without a quantized output runs in float).
    float_output_kernel = False

    @property
    def w_bits(self) -> int | None:
        return None if self.weight_quantizer is None else self.weight_quantizer.bits

    @property
    def a_bits(self) -> int | None:
        return None if self.input_quantizer is None else self.input_quantizer.bits

    def folded_weight_and_bias(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The float weight and bias the layer computes with (BN folded in, if any)."""
        return self.weight, self.bias

    def quantized_weight(self) -> torch.Tensor:
        w = self.folded_weight_and_bias()[0]
        return w if self.weight_quantizer is None else self.weight_quantizer(w)

    def bias_scale(self) -> torch.Tensor | None:
        """s_x * s_w (one per output channel when per-channel), or None if not both quantized."""
        wq, iq = self.weight_quantizer, self.input_quantizer
        if self.folded_weight_and_bias()[1] is None or wq is None or iq is None or not (wq.active and iq.active):
            return None
        return (iq.scale() * wq.scale()).detach()

    def quantized_bias(self) -> torch.Tensor | None:
        """The bias rounded to the int32 grid s_x * s_w, as an integer runtime (onnxruntime's
        QLinearConv, TFLite) adds it, so training sees what deployment computes.  The
        gradient reaches the float bias straight through; the step sizes get none from it."""
        bias = self.folded_weight_and_bias()[1]
        scale = self.bias_scale()
        if scale is None:
            return bias
        return round_ste(torch.clamp(bias / scale, INT32_MIN, INT32_MAX)) * scale

    def integer_bias(self) -> torch.Tensor | None:
        """The int32 bias the integer kernel adds (as floats), or None without one."""
        bias, scale = self.folded_weight_and_bias()[1], self.bias_scale()
        if bias is None or scale is None:
            return None
        return torch.clamp((bias.detach() / scale).round(), INT32_MIN, INT32_MAX)

    def integer_forward(self, x: torch.Tensor, accumulate) -> torch.Tensor | None:
        """What the deployed integer kernel returns for ``x``, or None where the float path
        applies: training, gradients wanted, a quantizer off or not yet set, or no kernel.
        ``accumulate(q_x, q_w, bias)`` gives the exact accumulator (float64)."""
        iq, wq = self.input_quantizer, self.weight_quantizer
        out, relu = self.__dict__.get("_output_quantizer", (None, False))
        if out is not None and not integer.writes_grid(out, relu):
            out = None
        if (self.training or torch.is_grad_enabled() or wq is None or not integer.reads_grid(iq)
                or not wq.active or (out is None and not self.float_output_kernel)):
            return None
        with torch.autocast(x.device.type, enabled=False):
            q_w, s_w = wq.to_integer(self.folded_weight_and_bias()[0].detach())
            acc = accumulate(integer.integers(x, iq), q_w, self.integer_bias())
            scale = integer.channel_shape(integer.scale_of(iq) * s_w.float(), acc)
            if out is None:
                return acc.float() * scale
            return integer.requantize(acc, scale / integer.scale_of(out), out)

    def _copy_float(self, layer: nn.Module) -> None:
        with torch.no_grad():
            self.weight.copy_(layer.weight)
            if layer.bias is not None:
                self.bias.copy_(layer.bias)
        self.train(layer.training)


def _conv_like(conv: nn.Conv2d, cls, **extra):
    return cls(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
               padding=conv.padding, dilation=conv.dilation, groups=conv.groups,
               bias=conv.bias is not None, padding_mode=conv.padding_mode,
               device=conv.weight.device, dtype=conv.weight.dtype, **extra)


class QuantConv2d(QuantLayerMixin, nn.Conv2d):
    """``nn.Conv2d`` on quantized weights, with the bias on the int32 grid of its input."""

    def __init__(self, *args, w_bits=4, per_channel=False, **kwargs):
        super().__init__(*args, **kwargs)
        self._add_weight_quantizer(w_bits, per_channel)

    @classmethod
    def from_float(cls, conv: nn.Conv2d, w_bits, per_channel=False) -> "QuantConv2d":
        layer = _conv_like(conv, cls, w_bits=None)
        layer._copy_float(conv)
        layer._add_weight_quantizer(w_bits, per_channel)  # after the copy: init from weights
        return layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        deployed = self.integer_forward(x, lambda q, w, b: integer.conv_accumulator(q, w, b, self))
        if deployed is not None:
            return deployed
        return self._conv_forward(x, self.quantized_weight(), self.quantized_bias())


class QuantConvBn2d(QuantConv2d):
    """A convolution followed by a BatchNorm, as the single folded convolution that deployment
    runs: w' = w * g, b' = beta + (b - mean) * g with g = gamma / sqrt(running var + eps).

    Evaluation (and export) computes exactly that, bias on the int32 grid included.  Training
    does what the standard conv-BN QAT modules do (Jacob et al. 2018; torch.ao's ConvBn2d):
    the convolution runs on the quantized folded weight, is divided by g again and goes
    through the BN with batch statistics, which keep updating the running ones; so QAT
    continues the float model's training while the quantizer learns the weights it stores.
    With ``frozen_stats`` (``QUANT.FREEZE_BN``) training computes the folded, deployed
    arithmetic with the running statistics fixed.  ``bn`` holds gamma, beta and the statistics.
    """

    def __init__(self, *args, bn: nn.BatchNorm2d, w_bits=4, per_channel=False, **kwargs):
        nn.Conv2d.__init__(self, *args, **kwargs)
        if bn.running_mean is None:
            raise ValueError("folding a BatchNorm needs its running statistics (track_running_stats=True)")
        if bn.num_features != self.out_channels:
            raise ValueError(f"BatchNorm of {bn.num_features} features after a conv with {self.out_channels} outputs")
        self.bn = bn
        self.frozen_stats = False
        self._add_weight_quantizer(w_bits, per_channel)

    @classmethod
    def from_float(cls, conv: nn.Conv2d, w_bits, per_channel=False, bn: nn.BatchNorm2d | None = None):
        layer = _conv_like(conv, cls, w_bits=None, bn=bn)
        layer._copy_float(conv)
        layer._add_weight_quantizer(w_bits, per_channel)
        return layer

    def _gain(self) -> torch.Tensor:
        bn = self.bn
        gain = torch.rsqrt(bn.running_var + bn.eps)
        return gain * bn.weight if bn.weight is not None else gain

    def folded_weight_and_bias(self) -> tuple[torch.Tensor, torch.Tensor]:
        bn, gain = self.bn, self._gain()
        bias = -bn.running_mean if self.bias is None else self.bias - bn.running_mean
        bias = bias * gain
        if bn.bias is not None:
            bias = bias + bn.bias
        return self.weight * gain.reshape(-1, 1, 1, 1), bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.frozen_stats:
            return super().forward(x)  # the folded arithmetic of the integer kernel
        gain = self._gain().reshape(1, -1, 1, 1)
        y = self._conv_forward(x, self.quantized_weight(), None) / gain
        if self.bias is not None:
            y = y + self.bias.reshape(1, -1, 1, 1)
        return self.bn(y)  # batch statistics; the running ones update as in float training


class QuantLinear(QuantLayerMixin, nn.Linear):
    """``nn.Linear`` on quantized weights, with the bias on the int32 grid of its input."""

    def __init__(self, *args, w_bits=4, per_channel=False, **kwargs):
        super().__init__(*args, **kwargs)
        self._add_weight_quantizer(w_bits, per_channel)

    @classmethod
    def from_float(cls, linear: nn.Linear, w_bits, per_channel=False) -> "QuantLinear":
        layer = cls(linear.in_features, linear.out_features, bias=linear.bias is not None,
                    device=linear.weight.device, dtype=linear.weight.dtype, w_bits=None)
        layer._copy_float(linear)
        layer._add_weight_quantizer(w_bits, per_channel)
        return layer

    float_output_kernel = True  # QGemm with a float output (the classifier's logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        deployed = self.integer_forward(x, integer.linear_accumulator)
        if deployed is not None:
            return deployed
        return F.linear(x, self.quantized_weight(), self.quantized_bias())


class _IntegerOp(nn.Module):
    """A parameter-free op of the integer graph: it keeps references (not submodules) to the
    quantizers of the tensors it reads and writes, set by :mod:`quant.graph`."""

    def __init__(self, inputs: tuple[LsqQuantizer, ...], output: LsqQuantizer, through_relu: bool = False):
        super().__init__()
        object.__setattr__(self, "_quantizers", (tuple(inputs), output, bool(through_relu)))

    def deployed(self) -> bool:
        inputs, output, relu = self._quantizers
        return (not self.training and not torch.is_grad_enabled() and all(map(integer.reads_grid, inputs))
                and integer.writes_grid(output, relu))


class QuantAdd(_IntegerOp):
    """``a + b`` of two quantized tensors; evaluation computes onnxruntime's QLinearAdd."""

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if not self.deployed():
            return a + b
        (qa, qb), qc, _ = self._quantizers
        with torch.autocast(a.device.type, enabled=False):
            return integer.qlinear_add(a, qa, b, qb, qc)


class QuantGlobalAvgPool(_IntegerOp):
    """Global average pooling of a quantized tensor (N, C, 1, 1); evaluation computes
    onnxruntime's QLinearGlobalAveragePool."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.deployed():
            return F.adaptive_avg_pool2d(x, 1)
        (qx,), qy, _ = self._quantizers
        with torch.autocast(x.device.type, enabled=False):
            return integer.qlinear_global_avgpool(x, qx, qy)


#: Float layer type -> its quantized counterpart.  Exact types: a subclass may override
#: ``forward`` in a way the converted layer would silently ignore.
QUANTIZED_TYPES: dict[type, type] = {nn.Conv2d: QuantConv2d, nn.Linear: QuantLinear}
