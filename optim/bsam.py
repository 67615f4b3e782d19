"""BSAM, Bilateral Sharpness-Aware Minimization (Deng et al., arXiv 2409.13173).

Three passes per step (the normative rule: docs/bsam_rule.md):

    g0 = grad L(w)                                   BN running stats updated
    e_max = rho     g0 / (||g0|| + 1e-12);  g1 = grad L(w + e_max)      BN frozen
    e_min = rho_min g0 / (||g0|| + 1e-12);  g2 = grad L(w - e_min)      BN frozen
    restore w;  d = g1 + g0 - (||g1|| / ||g2||) g2  ->  base optimizer

The max side penalises the sharpness of the worst neighbour (as SAM); the min side pulls
towards the flattest direction the batch allows.  ``rho_min`` follows each group's own
learning rate from ``rho_min`` at the group's ``lr_start`` to ``rho_min_end`` at its ``lr_end``
when ``rho_min_end`` is given (see :func:`current_rho_min`).

Memory: one persistent parameter-sized buffer (w).  g0 and g1 live on in their own gradient
tensors (detached from the parameters so the next backward allocates fresh ones) and g1
becomes ``d`` in place, so no gradient is ever copied.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from .sharpness import EPS, SharpnessAwareOptimizer, _global_norm, _grads


class BSAM(SharpnessAwareOptimizer):
    """Bilateral SAM around any base optimizer.

    >>> opt = BSAM(model.parameters(), torch.optim.SGD, rho=0.05, rho_min=0.05,
    ...            rho_min_end=0.0, lr=0.05, momentum=0.9, weight_decay=1e-3, model=model)
    >>> loss = opt.step(closure)   # closure: zero_grad, forward, backward, return loss

    By hand (AMP, accumulation, Lightning manual optimization): backward at w, then
    ``ascend()``, zero grads, backward, ``descend_to_min()``, zero grads, backward, then
    ``update()`` -- or ``prepare_update(); scaler.step(opt)`` with a ``GradScaler``.

    ``model``: the network, whose batch-norm layers then keep their running statistics still
    during the perturbed passes.  Without it, :meth:`step` freezes the batch-norm layers it
    sees running in the closure; for passes run by hand, wrap them in
    ``optim.frozen_bn_stats(model)``.

    ``lr_end_ratio``: the LR the schedule ends at, as a fraction of each group's start LR
    (a group may instead set its own ``lr_end``); it anchors the rho_min schedule.

    ``reference_compat=True`` reproduces the authors' published code, whose base step starts
    from w - e_min instead of w (its restore aliases the saved weights and then subtracts
    e_min in place).  With lr = 0 the paper rule leaves w unchanged; this mode moves it by
    exactly e_min.  Use it only to reproduce published numbers.
    """

    passes = 3

    def __init__(self, params, base_optimizer, *, rho: float = 0.05, rho_min: float = 0.05,
                 rho_min_end: float | None = None, lr_end_ratio: float = 0.0,
                 adaptive: bool = False, reference_compat: bool = False, model=None,
                 clip_grad_norm: float = 0.0, **base_kwargs):
        if rho_min < 0 or (rho_min_end is not None and rho_min_end < 0):
            raise ValueError(f"rho_min and rho_min_end must be >= 0, got {rho_min}, {rho_min_end}")
        super().__init__(params, base_optimizer, rho=rho, adaptive=adaptive, model=model,
                         clip_grad_norm=clip_grad_norm,
                         extra_defaults=dict(rho_min=rho_min, rho_min_end=rho_min_end),
                         **base_kwargs)
        for group in self.param_groups:  # each group's own anchors: its LR now and at the end
            group.setdefault("lr_start", float(group["lr"]))
            group.setdefault("lr_end", group["lr_start"] * lr_end_ratio)
        self.reference_compat = reference_compat
        self._held_g0: list[list[Tensor]] = []
        self._held_g1: list[list[Tensor]] = []

    def _perturbed_passes(self, closure) -> None:
        closure()
        if self.descend_to_min():
            closure()

    # -- passes ---------------------------------------------------------------------------
    def _keep_first_gradients(self, grads) -> None:
        self._held_g0 = [_detach_gradients(ps, gs) for (_, ps), gs in zip(self._active, grads)]

    @torch.no_grad()
    def descend_to_min(self) -> bool:
        """After the second backward (g1 at w + e_max): keep g1 and move to w - e_min."""
        if self._failed:
            return False
        g1 = [_grads(ps) for _, ps in self._active]
        norm1 = _global_norm(g1)
        self.last_stats["perturbed_grad_norm"] = norm1
        if not math.isfinite(norm1):
            self._fail()
            return False
        self._held_g1 = [_detach_gradients(ps, gs) for (_, ps), gs in zip(self._active, g1)]
        for (group, params), g0 in zip(self._active, self._held_g0):
            # from w + rho * u to w - rho_min * u in one move (u = g0 / ||g0||, times w^2
            # in adaptive mode); w itself is restored exactly from its buffer at the end
            radius = (group["rho"] + current_rho_min(group)) * self.rho_scale
            self._move(params, g0, -radius / (self._ascent_norm + EPS), group["adaptive"],
                       anchor=self._buffers(params, "w"))
        self.last_stats["rho_min"] = current_rho_min(self._active[0][0]) * self.rho_scale
        return True

    @torch.no_grad()
    def prepare_update(self) -> bool:
        """After the third backward (g2 at w - e_min): d = g1 + g0 - (||g1||/||g2||) g2 into
        ``p.grad``, weights back to w (or left at w - e_min in reference-compatible mode)."""
        if self._failed:
            self._give_back_held_gradients()
            return self._fail()
        g2 = [_grads(ps) for _, ps in self._active]
        norm2 = _global_norm(g2)
        self.last_stats["min_grad_norm"] = norm2
        if not math.isfinite(norm2):
            self._give_back_held_gradients()
            return self._fail()
        ratio = self.last_stats["perturbed_grad_norm"] / (norm2 + EPS)
        for d, g0, g2_group in zip(self._held_g1, self._held_g0, g2):
            torch._foreach_add_(d, g0)
            torch._foreach_add_(d, g2_group, alpha=-ratio)
            torch._foreach_sub_(g2_group, g0)  # g2 is spent: reuse it for ||g2 - g0||
        self.last_stats["cos_g0_g2"] = _cosine_from_difference(
            self.last_stats["grad_norm"], norm2, _global_norm(g2))
        self._give_back_held_gradients()
        if not self.reference_compat:
            self._restore()
        self._pending_update = True
        return True

    def _give_back_held_gradients(self) -> None:
        """Put the held g1 (now d) back as the parameters' gradients; drop g0."""
        for (_, params), held in zip(self._active, self._held_g1):
            for p, g in zip(params, held):
                p.grad = g
        self._held_g0, self._held_g1 = [], []


def _detach_gradients(params: list[Tensor], grads: list[Tensor]) -> list[Tensor]:
    """Keep ``grads`` and unhook them from ``params``, so that the closure's zero_grad and
    the next backward cannot touch them.  A gradient that is a view (a DDP bucket with
    ``gradient_as_bucket_view=True``) would be overwritten by the next backward: copy it."""
    kept = [g if g._base is None else g.clone() for g in grads]
    for p in params:
        p.grad = None
    return kept


def current_rho_min(group: dict) -> float:
    """rho_min(t) = end + (start - end) * (lr(t) - lr_end) / (lr_start - lr_end), with the
    group's own LR anchors, kept between ``rho_min`` and ``rho_min_end``: so it is linear in
    the LR for any schedule, and a warm-up (LR below both anchors) or a multistep schedule
    that ends below ``lr_end`` can never push it negative.  Under a constant LR it is
    ``rho_min * lr / lr_start`` (a warm-up ramps it up), and the constant ``rho_min`` when
    no end is set."""
    start, end = group["rho_min"], group["rho_min_end"]
    if end is None:
        return start
    lr_start, lr_end = group["lr_start"], group["lr_end"]
    lr = group["lr"]
    lr = float(lr.item()) if isinstance(lr, Tensor) else float(lr)
    if lr_start == lr_end:
        value = start * lr / lr_start if lr_start > 0 else start
    else:
        value = end + (start - end) * (lr - lr_end) / (lr_start - lr_end)
    return min(max(value, min(start, end)), max(start, end))


def _cosine_from_difference(norm_a: float, norm_b: float, norm_diff: float) -> float:
    """cos(a, b) from ||a||, ||b|| and ||a - b|| (no extra buffer for a dot product)."""
    if norm_a == 0.0 or norm_b == 0.0:
        return 0.0
    return (norm_a ** 2 + norm_b ** 2 - norm_diff ** 2) / (2.0 * norm_a * norm_b)
