"""Loss landscapes around a trained model's weights, along filter-normalised directions.

Li et al. (2018), "Visualizing the Loss Landscape of Neural Nets": a random Gaussian
direction is rescaled filter by filter to the norm of the weights it perturbs, so that a
step of 1 moves every filter by its own size.  That makes the landscapes of differently
scaled networks (SGD, SAM and BSAM minima of one architecture) comparable, and with one
seed every model is probed along the same Gaussian draw.

The measured loss is that of :mod:`optim.hessian` (mean over fixed batches, eval mode);
every function leaves the model as it found it.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import torch
from torch import nn

from .hessian import LossFn, as_batches, mean_loss, measurement_mode, trainable_parameters


def filter_normalized_direction(model: nn.Module, seed: int = 0,
                                ignore_1d: bool = True) -> list[torch.Tensor]:
    """A Gaussian direction, one tensor per trainable parameter, each filter (slice along the
    output dimension) rescaled to the norm of the same filter of the weights.

    As in Li et al. (2018), 1-D parameters (biases, BN scales and shifts) get a zero
    direction by default; with ``ignore_1d=False`` they are rescaled as a whole.
    """
    generator = torch.Generator().manual_seed(seed)
    direction = []
    for p in trainable_parameters(model):
        w = p.detach()
        d = torch.randn(w.shape, generator=generator, dtype=torch.float64).to(w)
        if w.dim() <= 1:
            d = torch.zeros_like(w) if ignore_1d else d * (w.norm() / (d.norm() + 1e-10))
        else:
            w_norms = w.reshape(w.shape[0], -1).norm(dim=1)
            d_norms = d.reshape(d.shape[0], -1).norm(dim=1)
            scale = (w_norms / (d_norms + 1e-10)).reshape(-1, *([1] * (w.dim() - 1)))
            d = d * scale
        direction.append(d)
    return direction


def _losses_on_grid(model: nn.Module, loss_fn: LossFn, batches: Sequence,
                    directions: Sequence[Sequence[torch.Tensor]],
                    coordinates: Iterable[Sequence[float]]) -> list[float]:
    """Loss at ``w0 + sum_i c_i d_i`` for each coordinate tuple ``c`` (``w0``: current weights).

    Each point is set from the saved ``w0`` (never by accumulating steps), so rounding does
    not drift along the grid.
    """
    params = trainable_parameters(model)
    origin = [p.detach().clone() for p in params]
    losses = []
    with torch.no_grad():
        for coords in coordinates:
            for i, p in enumerate(params):
                value = origin[i].clone()
                for c, d in zip(coords, directions):
                    value.add_(d[i], alpha=float(c))
                p.copy_(value)
            losses.append(mean_loss(model, loss_fn, batches))
    return losses


def loss_landscape_1d(model: nn.Module, loss_fn: LossFn, batches: Iterable,
                      direction: Sequence[torch.Tensor] | None = None, steps: int = 21,
                      span: tuple[float, float] = (-1.0, 1.0), seed: int = 0) -> dict:
    """Loss along ``w0 + a d`` for ``steps`` values of ``a`` in ``span``.

    ``d`` defaults to a filter-normalised random direction.  Returns ``{"alphas", "loss"}``.
    """
    if steps < 2:
        raise ValueError(f"a landscape needs steps >= 2, got {steps}")
    batches = as_batches(batches)
    with measurement_mode(model):
        d = direction if direction is not None else filter_normalized_direction(model, seed)
        alphas = np.linspace(span[0], span[1], steps)
        losses = _losses_on_grid(model, loss_fn, batches, [d], ((a,) for a in alphas))
    return {"alphas": alphas.tolist(), "loss": losses}


def loss_landscape_2d(model: nn.Module, loss_fn: LossFn, batches: Iterable,
                      directions: tuple[Sequence[torch.Tensor], Sequence[torch.Tensor]] | None = None,
                      steps: int = 11, span: tuple[float, float] = (-1.0, 1.0),
                      seed: int = 0) -> dict:
    """Loss on the ``steps x steps`` grid ``w0 + a d1 + b d2`` (two independent filter-
    normalised directions by default).  ``loss[i][j]`` is at ``(alphas[i], betas[j])``."""
    if steps < 2:
        raise ValueError(f"a landscape needs steps >= 2, got {steps}")
    batches = as_batches(batches)
    with measurement_mode(model):
        if directions is None:
            directions = (filter_normalized_direction(model, seed),
                          filter_normalized_direction(model, seed + 1))
        axis = np.linspace(span[0], span[1], steps)
        flat = _losses_on_grid(model, loss_fn, batches, directions,
                               ((a, b) for a in axis for b in axis))
    grid = np.asarray(flat).reshape(steps, steps)
    return {"alphas": axis.tolist(), "betas": axis.tolist(), "loss": grid.tolist()}

