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

Memory: one persistent parameter-sized buffer (w; LookSAM's reuse adds v).  g0 and g1 live
on in their own gradient tensors (detached from the parameters so the next backward allocates fresh ones) and g1
becomes ``d`` in place, so no gradient is ever copied.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from .sharpness import EPS, Phase, SharpnessAwareOptimizer
from .tensors import detach_gradients, global_norm, grads_of


class BSAM(SharpnessAwareOptimizer):
    """Bilateral SAM around any base optimizer.

    >>> opt = BSAM(model.parameters(), torch.optim.SGD, rho=0.05, rho_min=0.05,
    ...            rho_min_end=0.0, lr=0.05, momentum=0.9, weight_decay=1e-3, model=model)
    >>> loss = opt.step(closure)   # closure: zero_grad, forward, backward, return loss

    By hand (AMP, accumulation, Lightning manual optimization): backward at w; if
    ``ascend()``: zero grads, backward, and if ``descend_to_min()``: zero grads, backward;
    then ``update()`` -- or ``prepare_update(scaler.get_scale()); scaler.step(opt)`` with a
    ``GradScaler``.

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
    _last_pass = Phase.AT_MIN

    def __init__(self, params, base_optimizer, *, rho: float = 0.05, rho_min: float = 0.05,
                 rho_min_end: float | None = None, lr_end_ratio: float = 0.0,
                 adaptive: bool = False, reference_compat: bool = False, model=None,
                 clip_grad_norm: float = 0.0, interval: int = 1, reuse: str = "none",
                 reuse_alpha: float = 0.7, perturb: str = "global", **base_kwargs):
        if rho_min < 0 or (rho_min_end is not None and rho_min_end < 0):
            raise ValueError(f"rho_min and rho_min_end must be >= 0, got {rho_min}, {rho_min_end}")
        super().__init__(params, base_optimizer, rho=rho, adaptive=adaptive, model=model,
                         clip_grad_norm=clip_grad_norm, interval=interval, reuse=reuse,
                         reuse_alpha=reuse_alpha, perturb=perturb,
                         extra_defaults=dict(rho_min=rho_min, rho_min_end=rho_min_end),
                         **base_kwargs)
        for group in self.param_groups:  # each group's own anchors: its LR now and at the end
            group.setdefault("lr_start", float(group["lr"]))
            group.setdefault("lr_end", group["lr_start"] * lr_end_ratio)
        self.reference_compat = reference_compat

    def _holds_g0(self) -> bool:
        return True  # d needs it, and the min side moves along it

    def advance(self) -> bool:
        return self._step.phase is Phase.AT_MAX and self.descend_to_min()

    # -- passes ---------------------------------------------------------------------------
    @torch.no_grad()
    def descend_to_min(self) -> bool:
        """After the second backward (g1 at w + e_max): keep g1 and move to w - e_min.
        Returns False (the step is skipped) when ||g1|| is not finite."""
        s = self._step
        if s.phase is Phase.FAILED:
            return False
        if s.phase is not Phase.AT_MAX:
            raise RuntimeError(f"BSAM.descend_to_min() at the wrong point ({s.phase.value}); "
                               "call it after ascend() returned True and the second backward")
        g1 = [grads_of(ps) for _, ps in s.groups]
        s.norms["perturbed_grad_norm"] = global_norm(g1)
        if not math.isfinite(s.norms["perturbed_grad_norm"]):
            self._fail()
            return False
        s.g1 = [detach_gradients(ps, gs) for (_, ps), gs in zip(s.groups, g1)]
        for (group, params), g0 in zip(s.groups, s.g0):
            # from w + rho * u to w - rho_min * u in one move (u = g0 / ||g0||, times w^2
            # in adaptive mode); w itself is restored exactly from its buffer at the end
            radius = (group["rho"] + current_rho_min(group)) * self.rho_scale
            self._move(params, g0, -radius / (s.perturbation_norm + EPS), group["adaptive"],
                       anchor=self._buffers(params, "w"))
        s.extras["rho_min"] = current_rho_min(self.reference_group) * self.rho_scale
        s.phase = Phase.AT_MIN
        return True

    @torch.no_grad()
    def _combine(self, grad_scale: float) -> None:
        """After the third backward (g2 at w - e_min): d = g1 + g0 - (||g1||/||g2||) g2 into
        ``p.grad``, weights back to w (or left at w - e_min in reference-compatible mode)."""
        s = self._step
        g2 = [grads_of(ps) for _, ps in s.groups]
        norm2 = s.norms["min_grad_norm"] = global_norm(g2)
        if not math.isfinite(norm2):
            return self._fail()
        ratio = s.norms["perturbed_grad_norm"] / (norm2 + EPS)
        d, s.g1 = s.g1, []  # g1 becomes d in place: no gradient is copied
        for d_group, g0, g2_group in zip(d, s.g0, g2):
            torch._foreach_add_(d_group, g0)
            torch._foreach_add_(d_group, g2_group, alpha=-ratio)
            torch._foreach_sub_(g2_group, g0)  # g2 is spent: reuse it for ||g2 - g0||
        s.extras["cos_g0_g2"] = _cosine_from_difference(
            s.norms["grad_norm"], norm2, global_norm(g2))
        self._give_back(d)
        if not self.reference_compat:  # the authors' code steps from w - e_min (see above)
            self._restore()
        self._finish_full_step(d, grad_scale)


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
