"""Numbers that went non-finite: stop a diverging run early and never keep what it made.

A NaN loss or weight is not recoverable by training on, and a checkpoint full of NaN is
worse than none: it replaces the last good one and later loads as if it were a model.  So
the trainer counts consecutive non-finite steps (``TRAIN.MAX_NONFINITE_STEPS``), every
checkpoint write and every weights read checks the tensors first.
"""
from __future__ import annotations

import math

import torch

from .errors import UserError

#: The optimizer diagnostics that are non-finite when a step was skipped (SAM/BSAM).
NORMS = ("grad_norm", "perturbed_grad_norm", "min_grad_norm", "direction_norm")


class DivergenceError(UserError):
    """The run diverged; the last good checkpoint is kept."""


def nonfinite_count(tensors: dict) -> int:
    """How many NaN/inf values the floating-point tensors of ``tensors`` hold."""
    return sum(int((~torch.isfinite(t)).sum()) for t in tensors.values()
               if isinstance(t, torch.Tensor) and t.is_floating_point())


def require_finite(tensors: dict, what: str, advice: str) -> None:
    bad = nonfinite_count(tensors)
    if bad:
        raise DivergenceError(f"{what} holds {bad} non-finite (NaN/inf) values; {advice}")


class NonFiniteSteps:
    """Counts consecutive steps whose loss or gradient norm was NaN/inf."""

    def __init__(self, limit: int):
        self.limit, self.in_a_row = limit, 0

    def observe(self, loss: float, stats: dict, where: str) -> None:
        bad = not math.isfinite(loss) or any(not math.isfinite(stats[k]) for k in NORMS if k in stats)
        self.in_a_row = self.in_a_row + 1 if bad else 0
        if self.in_a_row >= self.limit:
            raise DivergenceError(
                f"training diverged: {self.in_a_row} steps in a row had a non-finite loss or "
                f"gradient (last at {where}, loss {loss}); stopped by TRAIN.MAX_NONFINITE_STEPS "
                f"{self.limit}, checkpoint_last.pth keeps the last good epoch; lower TRAIN.LR or "
                "set TRAIN.CLIP_GRAD_NORM")
