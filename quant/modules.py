"""Conv2d and Linear layers that fake-quantize their weights and their input activations.

They subclass the float layers, so the weight/bias parameter names stay the same: a float
state_dict loads into the converted model (the quantizers' step sizes are extra keys), and
optimizers, weight decay and SAM perturbations see the latent float weights as usual.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .lsq import LsqQuantizer, check_bits, round_ste

#: Integer runtimes add the bias in the int32 accumulator: bias_int = round(b / (s_x * s_w)).
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


def _optional_bits(bits, what: str):
    """``None``/0 means "keep float"; anything else must be a supported bit width."""
    if bits is None or (bits == 0 and not isinstance(bits, bool)):
        return None
    return check_bits(bits, what)


class QuantLayerMixin:
    """What the quantized layers share: building their quantizers and reporting their bits."""

    weight_quantizer: LsqQuantizer | None
    input_quantizer: LsqQuantizer | None

    def _add_quantizers(self, w_bits, a_bits, per_channel: bool) -> None:
        w_bits = _optional_bits(w_bits, "w_bits")
        a_bits = _optional_bits(a_bits, "a_bits")
        channels = self.weight.shape[0] if per_channel else 1
        self.weight_quantizer = None if w_bits is None else LsqQuantizer(w_bits, True, channels)
        self.input_quantizer = (
            None if a_bits is None else LsqQuantizer(a_bits, signed=True, activation=True)
        )
        if self.weight_quantizer is not None:
            self.weight_quantizer.to(self.weight.device)
            self.weight_quantizer.init_from(self.weight)
        if self.input_quantizer is not None:
            self.input_quantizer.to(self.weight.device)

    @property
    def w_bits(self) -> int | None:
        return None if self.weight_quantizer is None else self.weight_quantizer.bits

    @property
    def a_bits(self) -> int | None:
        return None if self.input_quantizer is None else self.input_quantizer.bits

    def quantized_weight(self) -> torch.Tensor:
        w = self.weight
        return w if self.weight_quantizer is None else self.weight_quantizer(w)

    def quantized_input(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.input_quantizer is None else self.input_quantizer(x)

    def bias_scale(self) -> torch.Tensor | None:
        """s_x * s_w (one per output channel when per-channel), or None if not both quantized."""
        wq, iq = self.weight_quantizer, self.input_quantizer
        if self.bias is None or wq is None or iq is None or not (wq.active and iq.active):
            return None
        return (self.input_quantizer.scale() * self.weight_quantizer.scale()).detach()

    def quantized_bias(self) -> torch.Tensor | None:
        """The bias rounded to the int32 grid s_x * s_w, as an integer runtime (onnxruntime's
        QLinearConv, TFLite) adds it, so training sees what deployment computes.  The
        gradient reaches the float bias straight through; the step sizes get none from it."""
        scale = self.bias_scale()
        if scale is None:
            return self.bias
        return round_ste(torch.clamp(self.bias / scale, INT32_MIN, INT32_MAX)) * scale

    def _copy_float(self, layer: nn.Module) -> None:
        with torch.no_grad():
            self.weight.copy_(layer.weight)
            if layer.bias is not None:
                self.bias.copy_(layer.bias)
        self.train(layer.training)


class QuantConv2d(QuantLayerMixin, nn.Conv2d):
    """``nn.Conv2d`` on quantized weights and quantized inputs."""

    def __init__(self, *args, w_bits=4, a_bits=4, per_channel=False, **kwargs):
        super().__init__(*args, **kwargs)
        self._add_quantizers(w_bits, a_bits, per_channel)

    @classmethod
    def from_float(cls, conv: nn.Conv2d, w_bits, a_bits, per_channel=False) -> "QuantConv2d":
        layer = cls(
            conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
            padding=conv.padding, dilation=conv.dilation, groups=conv.groups,
            bias=conv.bias is not None, padding_mode=conv.padding_mode,
            device=conv.weight.device, dtype=conv.weight.dtype,
            w_bits=None, a_bits=None,
        )
        layer._copy_float(conv)
        layer._add_quantizers(w_bits, a_bits, per_channel)  # after the copy: init from weights
        return layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.quantized_input(x)  # first: a lazy initialisation sets s_x used by the bias
        return self._conv_forward(x, self.quantized_weight(), self.quantized_bias())


class QuantLinear(QuantLayerMixin, nn.Linear):
    """``nn.Linear`` on quantized weights and quantized inputs."""

    def __init__(self, *args, w_bits=4, a_bits=4, per_channel=False, **kwargs):
        super().__init__(*args, **kwargs)
        self._add_quantizers(w_bits, a_bits, per_channel)

    @classmethod
    def from_float(cls, linear: nn.Linear, w_bits, a_bits, per_channel=False) -> "QuantLinear":
        layer = cls(
            linear.in_features, linear.out_features, bias=linear.bias is not None,
            device=linear.weight.device, dtype=linear.weight.dtype, w_bits=None, a_bits=None,
        )
        layer._copy_float(linear)
        layer._add_quantizers(w_bits, a_bits, per_channel)
        return layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.quantized_input(x)
        return F.linear(x, self.quantized_weight(), self.quantized_bias())


#: Float layer type -> its quantized counterpart.  Exact types: a subclass may override
#: ``forward`` in a way the converted layer would silently ignore.
QUANTIZED_TYPES: dict[type, type] = {nn.Conv2d: QuantConv2d, nn.Linear: QuantLinear}
