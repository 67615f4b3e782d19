"""SAM (Foret et al., 2021) and ASAM (Kwon et al., 2021): two passes per step.

    g0 = grad L(w);  e = rho * g0 / ||g0||  (ASAM: rho * w^2 g0 / ||w g0||)
    g1 = grad L(w + e);  restore w;  base step with g1
"""
from __future__ import annotations

import math

import torch

from .sharpness import SharpnessAwareOptimizer, _global_norm, _grads


class SAM(SharpnessAwareOptimizer):
    """Sharpness-Aware Minimization; ``adaptive=True`` gives ASAM.

    >>> opt = SAM(model.parameters(), torch.optim.SGD, rho=0.05, lr=0.1, momentum=0.9)
    >>> opt.step(closure)   # closure: zero_grad, forward, backward, return loss

    By hand: ``loss.backward(); opt.ascend(); opt.zero_grad(); loss_at_e.backward();
    opt.update()`` (or ``opt.prepare_update(); scaler.step(opt)`` with a GradScaler).
    """

    passes = 2

    @torch.no_grad()
    def prepare_update(self) -> bool:
        if self._failed:
            return self._fail()
        grads = [_grads(ps) for _, ps in self._active]
        norm1 = _global_norm(grads)
        self.last_stats["perturbed_grad_norm"] = norm1
        if not math.isfinite(norm1):
            return self._fail()
        self._restore()
        self._pending_update = True
        return True


def ASAM(params, base_optimizer, rho: float = 0.5, **kwargs) -> SAM:
    """Adaptive SAM: SAM with element-wise scaling by |w| (default rho 0.5 as in its paper)."""
    return SAM(params, base_optimizer, rho=rho, adaptive=True, **kwargs)
