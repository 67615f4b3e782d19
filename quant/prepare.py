"""Turn a float model into a QAT model: which layers get which bits, and a table saying so.

The policy is the one most low-bit papers use (LSQ included): every Conv2d/Linear at
``w_bits``/``a_bits``, except the first and the last layer, which are the most sensitive and
the cheapest, at ``first_last_bits`` (8 by default, ``None``/0 keeps them float), and any layer
named in ``skip``, which stays float.  "First" and "last" are the first and last Conv2d/Linear
in module registration order, which is the execution order of torchvision and CIFAR models.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable, Iterable

from torch import nn

from .lsq import LsqQuantizer, check_bits
from .graph import build_qat_graph
from .modules import QUANTIZED_TYPES, QuantConvBn2d, QuantLayerMixin, _optional_bits

#: Layers with their own parameters that are fine to leave float (their arithmetic is cheap
#: and is folded or fused by inference engines).
FLOAT_OK_TYPES = (
    nn.modules.batchnorm._BatchNorm,
    nn.GroupNorm,
    nn.LayerNorm,
    nn.modules.instancenorm._InstanceNorm,
    nn.PReLU,
)


@dataclass(frozen=True)
class LayerPlan:
    name: str
    kind: str  # class name of the float layer
    w_bits: int | None  # None: float
    a_bits: int | None
    per_channel: bool
    reason: str  # "body", "first", "last", "first+last", "skip"


def quantizable_layers(model: nn.Module, skip: Iterable[str] = ()) -> list[tuple[str, nn.Module, bool]]:
    """``(name, layer, skipped)`` for the Conv2d/Linear layers of ``model`` in registration order.

    Raises ValueError for a layer with weights that the converter does not know (Conv1d,
    ConvTranspose2d, a Conv2d subclass with its own forward, attention, RNNs ...) unless it is
    in ``skip`` (or inside a skipped module): converting around it would silently leave it float.
    """
    skip = tuple(skip)
    layers = []
    for name, module in model.named_modules():
        skipped = _is_skipped(name, skip)
        if type(module) in QUANTIZED_TYPES:
            layers.append((name, module, skipped))
        elif skipped:
            continue
        elif isinstance(module, QuantLayerMixin):
            raise ValueError(f"layer {name!r} is already quantized: pass the float model to prepare_qat")
        elif next(module.parameters(recurse=False), None) is not None and not isinstance(
            module, FLOAT_OK_TYPES
        ):
            raise ValueError(
                f"layer {name!r} ({type(module).__name__}) has weights but prepare_qat only knows "
                f"how to quantize {', '.join(t.__name__ for t in QUANTIZED_TYPES)}; add {name!r} "
                f"to the skip list (QUANT.SKIP) to keep it float"
            )
    return layers


def _is_skipped(name: str, skip: tuple[str, ...]) -> bool:
    return any(name == s or name.startswith(s + ".") for s in skip)


def plan_quantization(
    model: nn.Module,
    w_bits: int = 4,
    a_bits: int | None = 4,
    first_last_bits: int | None = 8,
    per_channel: bool = False,
    skip: Iterable[str] = (),
) -> list[LayerPlan]:
    """Decide, without changing anything, the bits of every Conv2d/Linear of ``model``."""
    w_bits = check_bits(w_bits, "w_bits")
    a_bits = _optional_bits(a_bits, "a_bits")
    first_last_bits = _optional_bits(first_last_bits, "first_last_bits")
    skip = tuple(skip)
    names = {name for name, _ in model.named_modules()}
    unknown = [s for s in skip if s not in names]
    if unknown:
        raise ValueError(
            f"skip names {unknown} are not modules of the model; use names from "
            f"model.named_modules(), e.g. {sorted(n for n in names if n)[:5]}"
        )
    layers = quantizable_layers(model, skip)  # first/last are decided before skipping
    ends = {layers[0][0]: "first", layers[-1][0]: "last"} if layers else {}
    if len(layers) == 1:
        ends = {layers[0][0]: "first+last"}
    plans = []
    for name, module, skipped in layers:
        kind = type(module).__name__
        if skipped:
            plans.append(LayerPlan(name, kind, None, None, False, "skip"))
        elif name in ends:
            bits = first_last_bits
            plans.append(LayerPlan(name, kind, bits, bits, per_channel and bits is not None, ends[name]))
        else:
            plans.append(LayerPlan(name, kind, w_bits, a_bits, per_channel, "body"))
    return plans


def prepare_qat(
    model: nn.Module,
    w_bits: int = 4,
    a_bits: int | None = 4,
    first_last_bits: int | None = 8,
    per_channel: bool = False,
    skip: Iterable[str] = (),
    log: Callable[[str], None] | None = print,
    freeze_bn: bool = False,
) -> nn.Module:
    """Return a QAT copy of ``model`` (``model`` is untouched): its Conv2d/Linear layers
    fake-quantize their weights (BN folded into convolutions), activation quantizers sit on
    the tensors the deployed integer graph carries (see :mod:`quant.graph`).

    Weight step sizes are initialised from the weights; activation step sizes are set by
    :func:`quant.calibrate.calibrate` (or, failing that, from the first batch seen).
    ``log`` receives the summary table (``None`` for silence).  ``freeze_bn`` makes the folded
    conv-BN layers train on their running statistics (see :class:`quant.QuantConvBn2d`).
    """
    plans = plan_quantization(model, w_bits, a_bits, first_last_bits, per_channel, skip)
    qmodel = build_qat_graph(copy.deepcopy(model), plans)
    for layer in qmodel.modules():
        if isinstance(layer, QuantConvBn2d):
            layer.frozen_stats = bool(freeze_bn)
    if log is not None:
        log(format_summary(plans))
    return qmodel


def layer_bits(model: nn.Module) -> dict[str, dict]:
    """Bits of every Conv2d/Linear of a (prepared or float) model, for summaries and metadata."""
    bits = {}
    for name, module in model.named_modules():
        if isinstance(module, QuantLayerMixin):
            wq = module.weight_quantizer
            aq = module.input_quantizer
            bits[name] = {
                "type": type(module).__name__,
                "w_bits": module.w_bits,
                "a_bits": module.a_bits,
                "per_channel": bool(wq is not None and wq.per_channel),
                "a_signed": None if aq is None else aq.is_signed,
            }
        elif isinstance(module, (nn.Conv2d, nn.Linear)):
            bits[name] = {"type": type(module).__name__, "w_bits": None, "a_bits": None,
                          "per_channel": False, "a_signed": None}
    return bits


def quantizer_roles(model: nn.Module, plans: list[LayerPlan]) -> dict[str, tuple[str, str]]:
    """``{quantizer name: (what, policy)}`` of a prepared model: ``what`` is "weights" or
    "inputs" of a layer whose plan has ``policy`` ("body", "first", ...), or "activations"
    (the other tensors the graph carries, at the body's bits)."""
    policy = {p.name: p.reason for p in plans}
    names = {id(m): n for n, m in model.named_modules() if isinstance(m, LsqQuantizer)}
    roles = {n: ("activations", "body") for n in names.values()}
    for name, layer in model.named_modules():
        if isinstance(layer, QuantLayerMixin):
            if layer.weight_quantizer is not None:
                roles[f"{name}.weight_quantizer"] = ("weights", policy.get(name, "body"))
            if id(layer.input_quantizer) in names:
                roles[names[id(layer.input_quantizer)]] = ("inputs", policy.get(name, "body"))
    return roles


def format_summary(plans: list[LayerPlan]) -> str:
    """A table of every Conv2d/Linear: weight bits, activation bits, granularity, why."""
    def show(bits):
        return "float" if bits is None else f"{bits}"

    rows = [("layer", "type", "W", "A", "scales", "policy")]
    for p in plans:
        scales = "-" if p.w_bits is None else ("per-channel" if p.per_channel else "per-tensor")
        rows.append((p.name, p.kind, show(p.w_bits), show(p.a_bits), scales, p.reason))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    counts: dict[str, int] = {}
    for p in plans:
        key = f"W{show(p.w_bits)}A{show(p.a_bits)}"
        counts[key] = counts.get(key, 0) + 1
    total = ", ".join(f"{n} x {k}" for k, n in sorted(counts.items()))
    return "\n".join(["QAT layers:"] + lines + [f"{len(plans)} Conv2d/Linear layers: {total}"])
