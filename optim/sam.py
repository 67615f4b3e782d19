"""SAM (Foret et al., 2021) and ASAM (Kwon et al., 2021): two passes per step.

    g0 = grad L(w);  e = rho * g0 / ||g0||  (ASAM: rho * w^2 g0 / ||w g0||)
    g1 = grad L(w + e);  restore w;  base step with g1
"""
from __future__ import annotations

import math

import torch

from .sharpness import Phase, SharpnessAwareOptimizer
from .tensors import global_norm, grads_of


class SAM(SharpnessAwareOptimizer):
    """Sharpness-Aware Minimization; ``adaptive=True`` gives ASAM.

    >>> opt = SAM(model.parameters(), torch.optim.SGD, rho=0.05, lr=0.1, momentum=0.9)
    >>> opt.step(closure)   # closure: zero_grad, forward, backward, return loss

    By hand: ``loss.backward()``; if ``opt.ascend()``: ``opt.zero_grad(); loss_at_e.backward()``;
    then ``opt.update()`` (or ``opt.prepare_update(scaler.get_scale()); scaler.step(opt)``
    with a GradScaler).
    """

    passes = 2
    _last_pass = Phase.AT_MAX

    @torch.no_grad()
    def _combine(self, grad_scale: float) -> None:
        """g1 is in ``p.grad``: it is the direction."""
        s = self._step
        g1 = [grads_of(ps) for _, ps in s.groups]
        s.norms["perturbed_grad_norm"] = global_norm(g1)
        if not math.isfinite(s.norms["perturbed_grad_norm"]):
            return self._fail()
        self._restore()
        self._finish_full_step(g1, grad_scale)


def ASAM(params, base_optimizer, rho: float = 0.5, **kwargs) -> SAM:
    """Adaptive SAM: SAM with element-wise scaling by |w| (default rho 0.5 as in its paper)."""
    return SAM(params, base_optimizer, rho=rho, adaptive=True, **kwargs)
