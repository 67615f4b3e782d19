"""LSQ: the learned-step-size quantizer of Esser et al., "Learned Step Size Quantization" (ICLR 2020).

Forward:  v_q = clip(round(v / s), -Qn, Qp) * s
Backward: dv_q/dv = 1 inside the range, 0 outside (straight-through estimator);
          dv_q/ds = -v/s + round(v/s) inside, -Qn below, Qp above,
          and the gradient reaching ``s`` is multiplied by g = 1 / sqrt(N * Qp).

The backward pass is not hand-written: it falls out of autograd applied to two small
identities (``grad_scale`` and ``round_ste``), so the formulas above are what the tests check
against, not what the code restates.
"""
from __future__ import annotations

import math

import torch
from torch import nn

#: Bit widths the quantizers accept.  1-bit needs a different (binary) quantizer and more
#: than 8 bits gains nothing over the integer types the export writes.
SUPPORTED_BITS = range(2, 9)

#: Smallest step size.  A gradient step may push ``s`` to or below zero; the quantizer then
#: projects it back to this value (and always divides by at least this), so the output is never
#: NaN/inf and the step size can grow again from there.
MIN_STEP_SIZE = 1e-6


def check_bits(bits, what: str = "bits") -> int:
    """Return ``bits`` as an int, or raise ValueError that says what is allowed."""
    if isinstance(bits, bool) or not isinstance(bits, int) or bits not in SUPPORTED_BITS:
        raise ValueError(
            f"{what}={bits!r} is not supported: use an integer from "
            f"{SUPPORTED_BITS.start} to {SUPPORTED_BITS.stop - 1}"
        )
    return bits


def quant_range(bits: int, signed: bool) -> tuple[int, int]:
    """``(Qn, Qp)``: the grid is the integers -Qn..Qp (signed) or 0..Qp (unsigned)."""
    check_bits(bits)
    if signed:
        return 2 ** (bits - 1), 2 ** (bits - 1) - 1
    return 0, 2**bits - 1


def grad_scale(x: torch.Tensor, scale: float) -> torch.Tensor:
    """Identity in the forward pass; multiplies the gradient by ``scale`` in the backward.

    Written as ``x + (y - y)`` with one ``y`` detached so the forward value is exactly ``x``.
    """
    scaled = x * scale
    return x.detach() + (scaled - scaled.detach())


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """``round`` in the forward pass (half to even, like ONNX QuantizeLinear); identity backward."""
    return x.round().detach() + (x - x.detach())


def lsq_fake_quantize(v: torch.Tensor, step: torch.Tensor, qn: int, qp: int, grad_factor: float):
    """``clip(round(v/s), -qn, qp) * s`` with the LSQ gradients (see the module docstring)."""
    s = grad_scale(step, grad_factor)
    return round_ste(torch.clamp(v / s, -qn, qp)) * s


def lsq_init_step(mean_abs: torch.Tensor, qp: int) -> torch.Tensor:
    """The paper's initial step size 2 * mean|v| / sqrt(Qp), kept >= MIN_STEP_SIZE."""
    return (2.0 * mean_abs / math.sqrt(qp)).clamp_min(MIN_STEP_SIZE)


class LsqQuantizer(nn.Module):
    """Fake-quantizes a tensor with a learned step size (one, or one per output channel).

    ``channels > 1`` gives per-channel step sizes along dim 0 (weights only).  The signedness is
    a buffer so that calibration can decide it (unsigned when the observed activations are
    never negative) and a checkpoint restores it.  An uninitialised quantizer initialises its
    step size from the first tensor it sees (the paper's rule), so a converted layer works
    even without a calibration pass.
    """

    def __init__(self, bits: int, signed: bool = True, channels: int = 1, activation: bool = False):
        super().__init__()
        self.bits = check_bits(bits)
        self.channels = int(channels)
        if activation and self.channels != 1:
            raise ValueError("activation quantizers are per-tensor (channels=1)")
        #: The gradient-scale N counts the elements sharing one step size: the whole tensor
        #: (or one channel) for weights, the features of one sample for activations.
        self.activation = bool(activation)
        self.step_size = nn.Parameter(torch.ones(self.channels))
        self.register_buffer("signed", torch.tensor(bool(signed)))
        self.register_buffer("initialized", torch.tensor(False))
        #: the grid's bits, saved so that a checkpoint says what it was trained at
        self.register_buffer("bit_width", torch.tensor(self.bits))
        self._signed = bool(signed)  # python mirror of the buffer: no device sync per forward
        self._initialized = False
        self._observer: dict | None = None  # set between begin_observing / end_observing
        #: False makes the quantizer an identity (calibration runs the float network)
        self.enabled = True

    # -- state ----------------------------------------------------------------------------
    @property
    def per_channel(self) -> bool:
        return self.channels > 1

    @property
    def is_signed(self) -> bool:
        return self._signed

    @property
    def is_initialized(self) -> bool:
        return self._initialized

    @property
    def active(self) -> bool:
        """Whether the forward quantizes (not disabled, not observing)."""
        return self.enabled and self._observer is None

    def qrange(self) -> tuple[int, int]:
        return quant_range(self.bits, self._signed)

    def set_signed(self, signed: bool) -> None:
        self._signed = bool(signed)
        self.signed.fill_(self._signed)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        """A checkpoint at other bits is an error (the step sizes would load onto another grid);
        one written before the bits were saved loads as it did."""
        stored = state_dict.get(prefix + "bit_width")
        if stored is not None and int(stored) != self.bits:
            error_msgs.append(f"{prefix[:-1]}: trained at {int(stored)} bits, this model has {self.bits}")
            return
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
        if stored is None and prefix + "bit_width" in missing_keys:
            missing_keys.remove(prefix + "bit_width")
        self._signed = bool(self.signed)
        self._initialized = bool(self.initialized)

    def scale(self) -> torch.Tensor:
        """The step size actually used: the parameter, never below MIN_STEP_SIZE.

        The clamp passes its gradient straight through, so a step size sitting at the floor
        still learns (a plain clamp has zero gradient there and would pin it forever)."""
        s = self.step_size
        return s + (s.clamp_min(MIN_STEP_SIZE) - s).detach()

    # -- initialisation -------------------------------------------------------------------
    def _mean_abs(self, v: torch.Tensor) -> torch.Tensor:
        v = v.detach().float()
        if self.per_channel:
            return v.abs().reshape(v.shape[0], -1).mean(dim=1)
        return v.abs().mean().reshape(1)

    @torch.no_grad()
    def set_step_size(self, step: torch.Tensor) -> None:
        step = torch.as_tensor(step, dtype=self.step_size.dtype, device=self.step_size.device)
        step = torch.nan_to_num(step, nan=MIN_STEP_SIZE).clamp_min(MIN_STEP_SIZE)
        self.step_size.copy_(step.expand_as(self.step_size))
        self.initialized.fill_(True)
        self._initialized = True

    @torch.no_grad()
    def init_from(self, v: torch.Tensor) -> None:
        """Set the step size from ``v`` with the paper's rule 2 * mean|v| / sqrt(Qp)."""
        self.set_step_size(lsq_init_step(self._mean_abs(v), self.qrange()[1]))

    # -- calibration (activations): watch float inputs, then set sign and step size ------
    def begin_observing(self) -> None:
        self._observer = {"mean_abs": 0.0, "batches": 0, "min": math.inf}

    def end_observing(self) -> dict | None:
        """Stop watching; return ``{"mean_abs": sum over batches, "batches": n, "min": m}``."""
        obs, self._observer = self._observer, None
        return obs

    def init_from_stats(self, mean_abs: float, minimum: float) -> None:
        """Unsigned grid when no negative input was seen; step size by the paper's rule."""
        self.set_signed(minimum < 0)
        self.set_step_size(lsq_init_step(torch.tensor([float(mean_abs)]), self.qrange()[1]))

    def _observe(self, v: torch.Tensor) -> None:
        v = v.detach().float()
        self._observer["mean_abs"] += float(v.abs().mean())
        self._observer["min"] = min(self._observer["min"], float(v.min()))
        self._observer["batches"] += 1

    def broadcast_scale(self, v: torch.Tensor) -> torch.Tensor:
        """The step size shaped to broadcast against ``v`` (per-channel along dim 0)."""
        step = self.scale()
        return step.reshape((-1,) + (1,) * (v.dim() - 1)) if self.per_channel else step

    @torch.no_grad()
    def to_integer(self, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(q, s)``: the integers clip(round(v/s), -Qn, Qp) (int8) and the step sizes.

        ``q * s`` (broadcast as :meth:`broadcast_scale`) is exactly what the forward returns;
        the export stores ``q`` as the integer weights.
        """
        qn, qp = self.qrange()
        q = torch.clamp((v / self.broadcast_scale(v)).round(), -qn, qp)
        return q.to(torch.int16 if qp > 127 else torch.int8), self.scale().detach().clone()

    # -- forward --------------------------------------------------------------------------
    def forward(self, v: torch.Tensor) -> torch.Tensor:
        if self._observer is not None:
            self._observe(v)
            return v  # calibration sees the float network
        if not self.enabled:
            return v
        if not self._initialized:
            self.init_from(v)
        if self.training and torch.is_grad_enabled():
            # projection: keep the learned parameter itself positive.  Through ``.data`` so that
            # autograd's version counter is untouched: a layer used twice in one forward (shared
            # weights) must not invalidate the graph of its first use.
            self.step_size.data.clamp_(min=MIN_STEP_SIZE)
        qn, qp = self.qrange()
        step = self.broadcast_scale(v)
        if not torch.is_grad_enabled():  # the same values without the gradient identities
            return torch.clamp((v / step).round(), -qn, qp) * step
        # N: the elements sharing one step size (one sample's features for activations)
        elements = v[0].numel() if (self.per_channel or self.activation) else v.numel()
        factor = 1.0 / math.sqrt(max(elements, 1) * max(qp, 1))
        return lsq_fake_quantize(v, step, qn, qp, factor)

    def extra_repr(self) -> str:
        kind = "per-channel" if self.per_channel else "per-tensor"
        what = "activation" if self.activation else "weight"
        return f"{what}, bits={self.bits}, {'signed' if self._signed else 'unsigned'}, {kind}"


def stored_bits(state: dict) -> dict[str, int]:
    """``{quantizer name: bits}`` of the quantizers a state_dict saved (see ``bit_width``)."""
    suffix = ".bit_width"
    return {k[:-len(suffix)]: int(v) for k, v in state.items() if k.endswith(suffix) and v.numel() == 1}


def step_size_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The quantizers' step sizes (optimizers give them their own group, e.g. rho=0)."""
    return [m.step_size for m in model.modules() if isinstance(m, LsqQuantizer)]
