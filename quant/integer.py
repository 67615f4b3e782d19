"""The integer arithmetic of onnxruntime's CPU kernels (MLAS, x86-64), written in PyTorch.

Evaluation of a QAT model (:mod:`quant.modules`) runs these instead of float convolutions on
fake-quantized values, so that PyTorch computes what the exported graph computes, rounding
included (the float path rounds at other places and flips a few activations by one step,
which a low-bit network amplifies).  What the kernels do:

* QLinearConv / QGemm: an exact int32 accumulator (bias included), then
  ``round_half_even(float32(acc) * float32(s_x * s_w / s_y))`` saturated to uint8, then the
  zero point; with a float output (QGemm without ``y_scale``) ``float32(acc) * (s_x * s_w)``;
* QLinearAdd (the AVX2 kernel, fused multiply-adds in float32):
  ``round(fma(a, s_a/s_c, fma(b, s_b/s_c, zp_c - (s_a/s_c * zp_a + s_b/s_c * zp_b))))``
  on the stored uint8 values;
* QLinearGlobalAveragePool: an int32 sum, times ``s_x / (s_y * N)`` in float32, rounded.

The accumulators are exact: in float32 on the CPU where every partial sum fits the mantissa,
else in float64, which holds every int32 (whatever algorithm the backend picks errs there by
far less than 0.5, so rounding restores the exact integer).  Other CPUs' kernels (ARM's fixed-point requantization) may round ties
differently; the export's check measures the agreement on the machine that runs it.
"""
from __future__ import annotations

import torch
from torch.nn import functional as F

from .lsq import LsqQuantizer

#: Activations are stored as uint8: unsigned grids with zero point 0, signed ones with 128.
UINT8_MAX = 255
SIGNED_ZERO_POINT = 128


def zero_point(quantizer: LsqQuantizer) -> int:
    return SIGNED_ZERO_POINT if quantizer.is_signed else 0


def scale_of(quantizer: LsqQuantizer) -> torch.Tensor:
    """The float32 step size(s) the export writes (detached)."""
    return quantizer.scale().detach().float()


def integers(x: torch.Tensor, quantizer: LsqQuantizer) -> torch.Tensor:
    """The grid integers (as float32) of ``x``, a tensor on ``quantizer``'s grid (exact: |q| <= 255)."""
    return (x.float() / scale_of(quantizer)).round()


def on_grid(q: torch.Tensor, quantizer: LsqQuantizer) -> torch.Tensor:
    """``q`` (integers) as the float values of ``quantizer``'s grid, what its forward returns."""
    return q.float() * scale_of(quantizer)


def saturate(rounded: torch.Tensor, quantizer: LsqQuantizer) -> torch.Tensor:
    """Rounded values (before the zero point) -> grid integers: what the uint8 saturation
    after adding the zero point, then the integer Clip of grids narrower than 8 bits, leave."""
    qn, qp = quantizer.qrange()
    zp = zero_point(quantizer)
    return rounded.clamp(max(0, zp - qn) - zp, min(UINT8_MAX, zp + qp) - zp)


def requantize(acc: torch.Tensor, multiplier: torch.Tensor, quantizer: LsqQuantizer) -> torch.Tensor:
    """MlasRequantizeOutput: float32(acc) * multiplier (float32), rounded half to even, plus
    the zero point, saturated; returned as grid values of ``quantizer``."""
    return on_grid(saturate((acc.float() * multiplier).round(), quantizer), quantizer)


#: float32 represents every integer below this exactly.
FLOAT32_EXACT = 2**24


def exact_products(op, q_x: torch.Tensor, q_w: torch.Tensor, terms: int, bias: torch.Tensor | None) -> torch.Tensor:
    """``op(q_x, q_w) + bias`` (a convolution or matrix product of integers, ``terms``
    products per output; ``bias`` shaped to broadcast) exactly.  On the CPU in float32, where
    every partial sum fits its mantissa (direct and GEMM algorithms then add exactly),
    splitting ``q_x`` into two halves if needed; a result that is not integral, and other
    devices, take float64."""
    q_w = q_w.float()
    reach = float(q_w.abs().max()) * terms
    offset = 0.0 if bias is None else float(bias.abs().max())
    if q_x.device.type == "cpu" and 16 * reach + offset < FLOAT32_EXACT:
        if float(q_x.abs().max()) * reach + offset < FLOAT32_EXACT:
            acc = op(q_x, q_w, bias)
        else:  # q_x = 16 * high + low, |high| <= 16, 0 <= low < 16: float64 for the sum
            high = torch.floor(q_x / 16)
            acc = op(high, q_w, None).double() * 16 + op(q_x - 16 * high, q_w, bias).double()
        if torch.equal(acc, acc.round()):
            return acc
    acc = op(q_x.double(), q_w.double(), None).round()
    return acc if bias is None else acc + channel_shape(bias.double(), acc)


def conv_accumulator(q_x: torch.Tensor, q_w: torch.Tensor, bias: torch.Tensor | None, conv) -> torch.Tensor:
    """The exact int32 accumulator of a convolution (``conv``: an nn.Conv2d for its geometry)."""
    def op(x, w, b):
        return F.conv2d(x, w, b, conv.stride, conv.padding, conv.dilation, conv.groups)

    return exact_products(op, q_x, q_w, q_w[0].numel(), bias)


def linear_accumulator(q_x: torch.Tensor, q_w: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return exact_products(F.linear, q_x, q_w, q_w.shape[1], bias)


def channel_shape(scale: torch.Tensor, acc: torch.Tensor) -> torch.Tensor:
    """A per-output-channel scale shaped for an (N, C, ...) accumulator."""
    return scale.reshape((1, -1) + (1,) * (acc.dim() - 2)) if scale.numel() > 1 else scale


def qlinear_add(a: torch.Tensor, qa: LsqQuantizer, b: torch.Tensor, qb: LsqQuantizer,
                qc: LsqQuantizer) -> torch.Tensor:
    """QLinearAdd of two grid tensors into ``qc``'s grid (MLAS's AVX2 kernel)."""
    sa, sb, sc = scale_of(qa), scale_of(qb), scale_of(qc)
    ratio_a, ratio_b = sa / sc, sb / sc
    za, zb, zc = (torch.tensor(float(zero_point(q)), device=sa.device) for q in (qa, qb, qc))
    fixed = zc - (ratio_a * za + ratio_b * zb)
    stored_a = integers(a, qa).double() + zero_point(qa)
    stored_b = integers(b, qb).double() + zero_point(qb)
    # fma in float32 = the exact float64 product-sum (it fits in 53 bits), rounded once
    partial = (stored_b * ratio_b.double() + fixed.double()).float()
    total = (stored_a * ratio_a.double() + partial.double()).float()
    return on_grid(saturate(total.round() - zero_point(qc), qc), qc)


def qlinear_global_avgpool(x: torch.Tensor, qx: LsqQuantizer, qy: LsqQuantizer) -> torch.Tensor:
    """QLinearGlobalAveragePool (NCHW -> NC11) from ``qx``'s grid into ``qy``'s."""
    size = x.shape[-2] * x.shape[-1]
    acc = integers(x, qx).double().sum(dim=(-2, -1), keepdim=True)
    multiplier = scale_of(qx) / (scale_of(qy) * float(size))
    return requantize(acc, multiplier, qy)


def reads_grid(quantizer: LsqQuantizer | None) -> bool:
    """Whether a tensor holds ``quantizer``'s grid values (it quantizes and has a step size)."""
    return quantizer is not None and quantizer.active and quantizer.is_initialized


def writes_grid(quantizer: LsqQuantizer | None, through_relu: bool) -> bool:
    """Whether a kernel can write ``quantizer``'s grid: a ReLU before it is free (the uint8
    saturation) only on an unsigned grid."""
    return reads_grid(quantizer) and not (through_relu and quantizer.is_signed)
