"""A trained QAT checkpoint's bit widths against the config's, named by their QUANT keys.

Every quantizer saves its bits (``bit_width``); a checkpoint loaded into a model built at
other bits would put its step sizes on another grid and export a model that was never
trained, so the difference is refused, naming the keys and the values the checkpoint holds.
Checkpoints written before the bits were saved are not checked here (the strict load still
refuses other quantizer layouts).
"""
from __future__ import annotations

from torch import nn

from quant import LsqQuantizer, quantizer_roles, stored_bits
from quant.prepare import LayerPlan

ENDS = ("first", "last", "first+last")


def config_key(what: str, policy: str) -> str:
    """The QUANT key that sets the bits of a quantizer with this role (:func:`quantizer_roles`)."""
    if policy in ENDS:
        return "QUANT.FIRST_LAST_BITS"
    if policy == "skip":
        return "QUANT.SKIP"
    return "QUANT.W_BITS" if what == "weights" else "QUANT.A_BITS"


def bit_differences(model: nn.Module, plans: list[LayerPlan], state: dict) -> dict[str, tuple]:
    """``{key: (checkpoint's bits, this config's)}``; layer inputs speak for A_BITS before
    the other activations (whose bits the residual stream may widen)."""
    stored = stored_bits(state)
    if not stored or any(f"{plan.name}.weight" not in state for plan in plans):
        return {}  # saved before the bits were, or another architecture: the strict load says so
    built = {n: m.bits for n, m in model.named_modules() if isinstance(m, LsqQuantizer)}
    roles = quantizer_roles(model, plans)
    order = sorted(roles, key=lambda n: {"inputs": 0, "weights": 0}.get(roles[n][0], 1))
    differ: dict[str, tuple] = {}
    for name in order:
        if name in stored and stored[name] != built[name]:
            differ.setdefault(config_key(*roles[name]), (stored[name], built[name]))
    for plan in plans:  # a layer quantized in one and float in the other
        held = f"{plan.name}.weight_quantizer" in stored
        if held != (plan.w_bits is not None):
            key = config_key("weights", plan.reason if plan.reason != "skip" or not held else "skip")
            differ.setdefault(key, ("quantized" if held else "float", plan.w_bits or "float"))
    if not differ and set(stored) != set(built):  # other activation quantizers (e.g. A_BITS 0)
        differ["QUANT.A_BITS"] = (None, None)
    return differ


def describe(differ: dict[str, tuple]) -> str:
    return ", ".join(f"{key} {ckpt} in the checkpoint, {here} in this config" if ckpt is not None
                     else f"{key} (other activation quantizers)" for key, (ckpt, here) in differ.items())
