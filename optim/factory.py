"""Build an optimizer from names, as the config-driven tools do."""
from __future__ import annotations

import difflib
from typing import Iterable

import torch
from torch import nn

from .bsam import BSAM
from .sam import SAM

BASE_OPTIMIZERS = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}
METHODS = ("none", "sam", "asam", "bsam")


def build(
    params: Iterable,
    optimizer: str = "sgd",
    *,
    lr: float,
    weight_decay: float = 0.0,
    momentum: float = 0.9,
    nesterov: bool = False,
    betas: tuple[float, float] = (0.9, 0.999),
    method: str = "none",
    rho: float = 0.05,
    rho_min: float = 0.05,
    rho_min_end: float | None = None,
    lr_end: float = 0.0,
    adaptive: bool = False,
    reference_compat: bool = False,
    model: nn.Module | None = None,
) -> torch.optim.Optimizer:
    """A base optimizer (``sgd`` | ``adam`` | ``adamw``), wrapped by ``method``
    (``none`` | ``sam`` | ``asam`` | ``bsam``).  ``asam`` is SAM with ``adaptive=True``;
    ``adaptive`` also gives BSAM its element-wise variant.  ``lr_end`` anchors BSAM's
    rho_min schedule (the LR the schedule ends at)."""
    base_cls = BASE_OPTIMIZERS.get(optimizer)
    if base_cls is None:
        raise ValueError(_unknown("optimizer", optimizer, BASE_OPTIMIZERS))
    if method not in METHODS:
        raise ValueError(_unknown("sharpness-aware method", method, METHODS))
    base_kwargs = dict(lr=lr, weight_decay=weight_decay)
    if base_cls is torch.optim.SGD:
        base_kwargs.update(momentum=momentum, nesterov=nesterov)
    else:
        base_kwargs.update(betas=betas)
    if method == "none":
        return base_cls(params, **base_kwargs)
    if method in ("sam", "asam"):
        return SAM(params, base_cls, rho=rho, adaptive=adaptive or method == "asam",
                   model=model, **base_kwargs)
    return BSAM(params, base_cls, rho=rho, rho_min=rho_min, rho_min_end=rho_min_end,
                lr_end=lr_end, adaptive=adaptive, reference_compat=reference_compat,
                model=model, **base_kwargs)


def _unknown(what: str, name: str, allowed) -> str:
    close = difflib.get_close_matches(str(name), list(allowed), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown {what} {name!r}{hint}; choose one of: {', '.join(allowed)}"
