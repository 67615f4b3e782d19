"""How flat is a minimum?  One JSON-ready report of a model's curvature and loss landscape.

BSAM's claim is that it finds flatter minima than SGD and SAM; this puts the instruments of
:mod:`optim.hessian` (top eigenvalues, trace) and :mod:`optim.landscape` (1-D/2-D loss
surfaces) behind one call, so that every model of a comparison is measured the same way:
with one ``seed`` the Lanczos start, the Hutchinson probes and the landscape directions are
the same random draws for every model of one architecture.
"""
from __future__ import annotations

from typing import Iterable

from torch import nn

from .hessian import (LossFn, as_batches, gradient, hutchinson_trace, mean_loss,
                      measurement_mode, top_eigenvalues, trainable_parameters)
from .landscape import loss_landscape_1d, loss_landscape_2d

LANDSCAPES = ("1d", "2d", "both", "none")


def measure(model: nn.Module, loss_fn: LossFn, batches: Iterable, topk: int = 3,
            trace_samples: int = 50, landscape: str = "1d", steps: int = 21,
            method: str = "lanczos", iters: int | None = None, seed: int = 0,
            span: float = 1.0) -> dict:
    """All the numbers the flatness tool reports, as one JSON-ready dict.

    ``topk=0`` / ``trace_samples=0`` / ``landscape="none"`` skip that measurement; landscapes
    cover ``[-span, span]`` filter norms along each direction.
    """
    if landscape not in LANDSCAPES:
        raise ValueError(f"landscape must be one of {', '.join(map(repr, LANDSCAPES))}, got {landscape!r}")
    if not span > 0:
        raise ValueError(f"a landscape span must be > 0, got {span}")
    batches = as_batches(batches)
    params = trainable_parameters(model)
    with measurement_mode(model):
        loss = mean_loss(model, loss_fn, batches)
        grad_norm = float(gradient(model, loss_fn, batches).norm())
    result: dict = {
        "loss": loss,
        "grad_norm": grad_norm,
        "num_params": sum(p.numel() for p in params),
        "num_batches": len(batches),
        "seed": seed,
    }
    if topk > 0:
        result["eigenvalues"] = {
            "method": method,
            "top": top_eigenvalues(model, loss_fn, batches, topk, method, iters, seed),
        }
    if trace_samples > 0:
        result["trace"] = hutchinson_trace(model, loss_fn, batches, trace_samples, seed)
    if landscape in ("1d", "both"):
        result["landscape_1d"] = loss_landscape_1d(model, loss_fn, batches, steps=steps,
                                                   span=(-span, span), seed=seed)
    if landscape in ("2d", "both"):
        result["landscape_2d"] = loss_landscape_2d(model, loss_fn, batches, steps=steps,
                                                   span=(-span, span), seed=seed)
    return result
