"""The LSQ quantizer against the paper's formulas (Esser et al. 2020, eqs. 1-3 and 5)."""
import math

import pytest
import torch

from quant import MIN_STEP_SIZE, LsqQuantizer, QuantConv2d, QuantLinear, quant_range


def reference_forward(v, s, qn, qp):
    return torch.clamp(torch.round(v / s), -qn, qp) * s


def reference_grads(v, s, qn, qp, upstream, n_per_step, channel_dims=None):
    """dL/dv and dL/ds from the paper (eqs. 3 and 5): STE strictly inside -Qn < v/s < Qp,
    the LSQ step gradient (-Qn / Qp at and beyond the ends), and g = 1/sqrt(N * Qp)."""
    ratio = v / s
    inside = (ratio > -qn) & (ratio < qp)
    grad_v = upstream * inside
    local = torch.where(ratio <= -qn, torch.full_like(v, -qn),
                        torch.where(ratio >= qp, torch.full_like(v, qp), -ratio + torch.round(ratio)))
    g = 1.0 / math.sqrt(n_per_step * qp)
    if channel_dims is None:
        grad_s = (upstream * local).sum().reshape(1) * g
    else:
        grad_s = (upstream * local).sum(dim=channel_dims) * g
    return grad_v, grad_s


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("signed", [True, False])
def test_forward_equals_formula_and_range(bits, signed):
    torch.manual_seed(bits)
    q = LsqQuantizer(bits, signed=signed, activation=True)
    q.set_step_size(torch.tensor([0.07]))
    v = torch.randn(4, 3, 5, 5) * 0.5
    out = q(v)
    qn, qp = quant_range(bits, signed)
    assert (qn, qp) == ((2 ** (bits - 1), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1))
    assert torch.equal(out, reference_forward(v, torch.tensor(0.07), qn, qp))
    levels = torch.round(out / 0.07)
    assert levels.min() >= -qn and levels.max() <= qp


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_per_tensor_weight_gradients_match_lsq(bits):
    torch.manual_seed(0)
    q = LsqQuantizer(bits, signed=True)
    s = 0.25 / 2 ** (bits - 1)  # range +-0.25 for weights of std 0.2: both clip sides occur
    q.set_step_size(torch.tensor([s]))
    v = (torch.randn(6, 4, 3, 3) * 0.2).requires_grad_(True)
    upstream = torch.randn_like(v)
    (q(v) * upstream).sum().backward()
    qn, qp = quant_range(bits, True)
    grad_v, grad_s = reference_grads(v.detach(), torch.tensor(s), qn, qp, upstream, v.numel())
    assert torch.allclose(v.grad, grad_v)
    assert torch.allclose(q.step_size.grad, grad_s, rtol=1e-4, atol=1e-7)
    # both sides of the range occur, so the clipped branches were exercised
    assert (v.detach() / s < -qn).any() and (v.detach() / s > qp).any()


def test_per_channel_weight_gradients_match_lsq():
    torch.manual_seed(1)
    q = LsqQuantizer(3, signed=True, channels=5)
    steps = torch.tensor([0.01, 0.03, 0.05, 0.08, 0.2])
    q.set_step_size(steps)
    v = (torch.randn(5, 2, 3, 3) * 0.15).requires_grad_(True)
    upstream = torch.randn_like(v)
    out = q(v)
    (out * upstream).sum().backward()
    qn, qp = quant_range(3, True)
    s = steps.reshape(5, 1, 1, 1)
    assert torch.equal(out, reference_forward(v.detach(), s, qn, qp))
    grad_v, grad_s = reference_grads(v.detach(), s, qn, qp, upstream, v[0].numel(), channel_dims=(1, 2, 3))
    assert torch.allclose(v.grad, grad_v)
    assert torch.allclose(q.step_size.grad, grad_s, rtol=1e-4, atol=1e-7)


def test_activation_gradient_scale_counts_features_of_one_sample():
    torch.manual_seed(2)
    q = LsqQuantizer(4, signed=False, activation=True)
    q.set_step_size(torch.tensor([0.1]))
    x = torch.relu(torch.randn(8, 3, 4, 4)).requires_grad_(True)
    upstream = torch.randn_like(x)
    (q(x) * upstream).sum().backward()
    qn, qp = quant_range(4, False)
    grad_x, grad_s = reference_grads(x.detach(), torch.tensor(0.1), qn, qp, upstream, x[0].numel())
    assert torch.allclose(x.grad, grad_x)
    assert torch.allclose(q.step_size.grad, grad_s, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_quantized_weights_take_at_most_2_pow_b_values(bits, per_channel):
    torch.manual_seed(bits)
    conv = torch.nn.Conv2d(16, 8, 3)
    layer = QuantConv2d.from_float(conv, bits, per_channel=per_channel)
    w = layer.quantized_weight().detach()
    groups = w.reshape(w.shape[0], -1) if per_channel else w.reshape(1, -1)
    for values in groups:
        assert values.unique().numel() <= 2**bits
    ints, scale = layer.weight_quantizer.to_integer(conv.weight)
    assert ints.unique().numel() <= 2**bits
    assert torch.equal(ints.float() * layer.weight_quantizer.broadcast_scale(w), w)
    assert scale.shape == ((8,) if per_channel else (1,))


def test_step_size_initialised_from_weights():
    torch.manual_seed(3)
    linear = torch.nn.Linear(20, 6)
    layer = QuantLinear.from_float(linear, 4, per_channel=True)
    expected = 2 * linear.weight.abs().mean(dim=1) / math.sqrt(7)
    assert torch.allclose(layer.weight_quantizer.step_size.detach(), expected)
    layer = QuantLinear.from_float(linear, 4, per_channel=False)
    assert torch.allclose(layer.weight_quantizer.step_size.detach(), (2 * linear.weight.abs().mean() / math.sqrt(7)).reshape(1))


def test_uninitialised_activation_quantizer_initialises_from_first_batch():
    q = LsqQuantizer(4, signed=True, activation=True)
    x = torch.randn(4, 10)
    q(x)
    assert q.is_initialized
    assert torch.allclose(q.step_size.detach(), (2 * x.abs().mean() / math.sqrt(7)).reshape(1))


MIN_STEP_F32 = torch.tensor(MIN_STEP_SIZE).item()  # the float32 value the parameter holds


def test_step_size_stays_positive_when_pushed_below_zero():
    torch.manual_seed(4)
    q = LsqQuantizer(4, signed=True)
    q.set_step_size(torch.tensor([0.01]))
    v = torch.randn(32, 16) * 0.01
    for _ in range(5):
        q.step_size.grad = None
        # d(out)/ds is +Qp for clipped-high values: a loss increasing in s drives s negative
        loss = q(v.abs() + 1.0).sum()
        loss.backward()
        assert q.step_size.grad.item() > 0
        with torch.no_grad():  # a plain SGD step with a huge learning rate
            q.step_size -= 1e6 * q.step_size.grad
        assert q.step_size.item() < 0  # the raw parameter went negative ...
        out = q(v)  # ... and the next forward still works on a positive step
        assert torch.isfinite(out).all()
        assert q.scale().item() >= MIN_STEP_F32 > 0
        assert q.step_size.item() >= MIN_STEP_F32  # projected back in training mode
    q.eval()
    with torch.no_grad():
        q.step_size.fill_(-3.0)  # a bad checkpoint value: eval forward still finite
    assert torch.isfinite(q(v)).all() and q.scale().item() > 0


def test_nan_or_zero_weights_give_a_positive_step():
    q = LsqQuantizer(4)
    q.init_from(torch.zeros(3, 3))
    assert q.step_size.item() == MIN_STEP_F32
    q.set_step_size(torch.tensor([float("nan")]))
    assert q.step_size.item() == MIN_STEP_F32


@pytest.mark.parametrize("bad", [1, 9, 16, 0, -4, 2.5, True, "4", None])
def test_bits_outside_2_to_8_are_refused(bad):
    with pytest.raises(ValueError, match="from 2 to 8"):
        LsqQuantizer(bad)


def test_signedness_and_step_restore_from_state_dict():
    q = LsqQuantizer(4, signed=True, activation=True)
    q.init_from_stats(mean_abs=0.5, minimum=0.0)
    assert not q.is_signed and q.qrange() == (0, 15)
    fresh = LsqQuantizer(4, signed=True, activation=True)
    fresh.load_state_dict(q.state_dict())
    assert not fresh.is_signed and fresh.is_initialized
    x = torch.rand(2, 8)
    assert torch.equal(fresh(x), q(x))


def test_a_layer_used_twice_in_one_forward_backpropagates():
    """Shared weights: the step-size projection must not invalidate the first use's graph."""
    layer = QuantConv2d.from_float(torch.nn.Conv2d(4, 4, 3, padding=1), 4)
    layer.train()
    x = torch.randn(2, 4, 6, 6)
    with torch.no_grad():
        layer.weight_quantizer.step_size.fill_(-1.0)  # forces the projection on the next forward
    layer(layer(x)).sum().backward()
    assert layer.weight_quantizer.step_size.item() > 0 and layer.weight.grad is not None
