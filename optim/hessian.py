"""Curvature of a trained model's loss: Hessian-vector products, top eigenvalues, trace.

These measure the sharpness that SAM and BSAM aim to lower.  Everything takes a ``model``, a
``loss_fn(model, batch) -> scalar tensor`` and a list of batches (already on the model's
device).  The measured quantity is the loss averaged over those batches, with the model in
eval mode, so that batch-norm uses its running statistics and dropout is off: the loss is
then one fixed, deterministic function of the weights, which Lanczos and Hutchinson need
(a stochastic operator would make the Krylov basis meaningless).

Curvature comes from Hessian-vector products by double backward (Pearlmutter's trick):
``H v = d/dw (dL/dw . v)``, which costs about two backward passes and never forms ``H``.

* :func:`top_eigenvalues` -- Lanczos with full re-orthogonalisation (largest algebraic
  eigenvalues), or power iteration with deflation (largest in magnitude, as PyHessian does).
* :func:`hutchinson_trace` -- ``tr(H) = E[v^T H v]`` for Rademacher ``v``.

Loss surfaces around the weights are in :mod:`optim.landscape`; both at once, as one
report, in :mod:`optim.flatness`.  Every public function leaves the model exactly as it
found it (weights, buffers and train/eval flags), see :func:`measurement_mode`.
"""
from __future__ import annotations

import contextlib
import math
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
from torch import nn

LossFn = Callable[[nn.Module, object], torch.Tensor]


# -- parameters as one flat vector -----------------------------------------------------------
def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters the curvature is taken with respect to (those that train)."""
    return [p for p in model.parameters() if p.requires_grad]


def flatten(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def unflatten(flat: torch.Tensor, like: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Split ``flat`` into views shaped like ``like`` (the inverse of :func:`flatten`)."""
    chunks = torch.split(flat, [t.numel() for t in like])
    return [c.view_as(t) for c, t in zip(chunks, like)]


# -- a fixed, restorable measurement state -----------------------------------------------------
@contextlib.contextmanager
def measurement_mode(model: nn.Module):
    """Eval mode for the duration (BN running stats, no dropout); afterwards the weights,
    buffers and every module's train/eval flag are restored bit for bit.  (Gradients are
    taken with ``torch.autograd.grad``, so ``.grad`` fields are never touched.)"""
    saved_state = {k: v.detach().clone() for k, v in model.state_dict(keep_vars=True).items()}
    saved_modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        yield model
    finally:
        with torch.no_grad():
            current = model.state_dict(keep_vars=True)
            for key, value in saved_state.items():
                current[key].copy_(value)
        for module, training in saved_modes.items():
            module.training = training


def as_batches(batches: Iterable) -> list:
    """The batches as a list (they are passed over many times); none is an error."""
    batches = list(batches)
    if not batches:
        raise ValueError("flatness measurement needs at least one batch")
    return batches


# -- loss, gradient and Hessian-vector products ------------------------------------------------
@torch.no_grad()
def mean_loss(model: nn.Module, loss_fn: LossFn, batches: Sequence) -> float:
    """The measured objective: the loss averaged over the batches (each batch weighs the same)."""
    return sum(float(loss_fn(model, b)) for b in batches) / len(batches)


def gradient(model: nn.Module, loss_fn: LossFn, batches: Sequence,
             params: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
    """Flat gradient of the mean loss."""
    params = list(params) if params is not None else trainable_parameters(model)
    total = torch.zeros(sum(p.numel() for p in params), device=params[0].device,
                        dtype=params[0].dtype)
    for batch in batches:
        grads = torch.autograd.grad(loss_fn(model, batch), params, allow_unused=True,
                                    materialize_grads=True)
        total += flatten(grads)
    return total / len(batches)


def hessian_vector_product(model: nn.Module, loss_fn: LossFn, batches: Sequence,
                           vector: torch.Tensor,
                           params: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
    """``H v`` for the Hessian of the mean loss and a flat ``vector``, by double backward."""
    params = list(params) if params is not None else trainable_parameters(model)
    pieces = unflatten(vector.detach(), params)
    total = torch.zeros_like(vector)
    for batch in batches:
        loss = loss_fn(model, batch)
        grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True,
                                    materialize_grads=True)
        grad_dot_v = sum((g * v).sum() for g, v in zip(grads, pieces))
        if not grad_dot_v.requires_grad:  # the loss is linear in every parameter: H = 0
            continue
        hv = torch.autograd.grad(grad_dot_v, params, allow_unused=True, materialize_grads=True)
        total += flatten(hv).detach()
    return total / len(batches)


def _hvp_operator(model: nn.Module, loss_fn: LossFn, batches: Sequence):
    params = trainable_parameters(model)
    if not params:
        raise ValueError("the model has no trainable parameters to measure curvature over")
    dim = sum(p.numel() for p in params)
    return (lambda v: hessian_vector_product(model, loss_fn, batches, v, params)), params, dim


def _random_vector(dim: int, like: torch.Tensor, generator: torch.Generator,
                   rademacher: bool = False) -> torch.Tensor:
    """Random vector drawn on the CPU (same numbers on every device), moved to ``like``."""
    if rademacher:
        v = torch.randint(0, 2, (dim,), generator=generator).to(torch.float64) * 2 - 1
    else:
        v = torch.randn(dim, generator=generator, dtype=torch.float64)
    return v.to(device=like.device, dtype=like.dtype)


# -- eigenvalues -------------------------------------------------------------------------------
def lanczos(matvec: Callable[[torch.Tensor], torch.Tensor], start: torch.Tensor,
            iters: int) -> np.ndarray:
    """Ritz values (ascending) of a symmetric operator after ``iters`` Lanczos steps.

    Full re-orthogonalisation against the stored basis keeps the Ritz values free of the
    spurious copies plain Lanczos produces in floating point; its cost (``iters`` vectors of
    the model's size) is what buys accurate extreme eigenvalues in few products.
    """
    dim = start.numel()
    iters = max(1, min(iters, dim))
    basis = torch.zeros(iters, dim, device=start.device, dtype=start.dtype)
    alphas: list[float] = []
    betas: list[float] = []
    basis[0] = start / start.norm()
    for j in range(iters):
        w = matvec(basis[j])
        alpha = float(torch.dot(w.double(), basis[j].double()))
        alphas.append(alpha)
        w = w - alpha * basis[j]
        if j > 0:
            w = w - betas[-1] * basis[j - 1]
        for _ in range(2):  # twice is enough (Kahan-Parlett)
            w = w - basis[: j + 1].T @ (basis[: j + 1] @ w)
        beta = float(w.double().norm())
        scale = max(abs(a) for a in alphas) + max(betas, default=0.0)
        if j == iters - 1 or beta <= 1e-10 * max(scale, 1e-30):
            break  # done, or the Krylov space is invariant: the Ritz values are exact
        betas.append(beta)
        basis[j + 1] = w / beta
    m = len(alphas)
    tridiagonal = np.diag(alphas) + np.diag(betas[: m - 1], 1) + np.diag(betas[: m - 1], -1)
    return np.linalg.eigvalsh(tridiagonal)


def power_iteration_topk(matvec: Callable[[torch.Tensor], torch.Tensor], dim: int, k: int,
                         like: torch.Tensor, generator: torch.Generator,
                         max_iters: int = 100, tol: float = 1e-5) -> list[float]:
    """Top-``k`` eigenvalues by magnitude, one at a time, each found by power iteration in
    the complement of the eigenvectors already found (deflation by projection)."""
    found: list[torch.Tensor] = []
    values: list[float] = []
    for _ in range(min(k, dim)):
        v = _random_vector(dim, like, generator)
        eigenvalue = None
        for _ in range(max_iters):
            for u in found:
                v = v - torch.dot(u, v) * u
            v = v / v.norm()
            hv = matvec(v)
            for u in found:
                hv = hv - torch.dot(u, hv) * u
            new = float(torch.dot(hv.double(), v.double()))
            norm = float(hv.norm())
            if norm == 0.0:
                eigenvalue = 0.0
                break
            v = hv / norm
            converged = eigenvalue is not None and abs(new - eigenvalue) <= tol * (abs(new) + 1e-12)
            eigenvalue = new
            if converged:
                break
        found.append(v / v.norm())
        values.append(eigenvalue)
    return values


def top_eigenvalues(model: nn.Module, loss_fn: LossFn, batches: Iterable, k: int = 3,
                    method: str = "lanczos", iters: int | None = None,
                    seed: int = 0) -> list[float]:
    """The ``k`` largest Hessian eigenvalues of the mean loss, largest first.

    ``lanczos`` (default) returns the largest algebraic eigenvalues after ``iters`` Hessian-
    vector products (default ``max(3k, 30)``; memory: that many copies of the weights).
    ``power`` needs only ``k`` copies but returns the largest in magnitude and is slower to
    converge when eigenvalues are close.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    batches = as_batches(batches)
    generator = torch.Generator().manual_seed(seed)
    with measurement_mode(model):
        matvec, params, dim = _hvp_operator(model, loss_fn, batches)
        if method == "lanczos":
            start = _random_vector(dim, params[0], generator)
            steps = max(k, iters if iters is not None else max(3 * k, 30))  # k values need k steps
            ritz = lanczos(matvec, start, steps)
            return [float(x) for x in ritz[::-1][:k]]
        if method == "power":
            values = power_iteration_topk(matvec, dim, k, params[0], generator,
                                          max_iters=iters if iters is not None else 100)
            return sorted(values, reverse=True)
    raise ValueError(f"unknown eigenvalue method {method!r}; use 'lanczos' or 'power'")


# -- trace -------------------------------------------------------------------------------------
def hutchinson_trace(model: nn.Module, loss_fn: LossFn, batches: Iterable, samples: int = 100,
                     seed: int = 0) -> dict:
    """Hutchinson's estimate of ``tr(H)``: the mean of ``v^T H v`` over Rademacher ``v``.

    Returns ``{"trace", "stderr", "samples"}``; ``stderr`` is the standard error of the mean
    (``None`` for one sample), so a reader can tell whether two models' traces really differ.
    """
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    batches = as_batches(batches)
    generator = torch.Generator().manual_seed(seed)
    with measurement_mode(model):
        matvec, params, dim = _hvp_operator(model, loss_fn, batches)
        draws = []
        for _ in range(samples):
            v = _random_vector(dim, params[0], generator, rademacher=True)
            draws.append(float(torch.dot(matvec(v).double(), v.double())))
    draws = np.asarray(draws)
    stderr = float(draws.std(ddof=1) / math.sqrt(samples)) if samples > 1 else None  # JSON has no NaN
    return {"trace": float(draws.mean()), "stderr": stderr, "samples": samples}
