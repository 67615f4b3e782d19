"""Per-iteration learning-rate schedules (warm-up + cosine | multistep | constant).

The schedule is a pure function of the iteration, so resuming needs only the iteration
count, and BSAM's rho_min (which follows the LR) can be anchored at the schedule's start
and end values.
"""
from __future__ import annotations

import bisect
import math
from functools import partial



def lr_factor(it: int, *, kind: str, iters_per_epoch: int, total_iters: int, warmup_iters: int,
              lr_steps: list, lr_factor_: float, end_ratio: float) -> float:
    """Multiplier of the base LR at iteration ``it`` (0-based)."""
    if warmup_iters and it < warmup_iters:
        warm = (it + 1) / warmup_iters
    else:
        warm = 1.0
    if kind == "constant":
        main = 1.0
    elif kind == "cosine":
        span = max(total_iters - warmup_iters, 1)
        progress = min(max(it - warmup_iters, 0) / span, 1.0)
        main = end_ratio + (1 - end_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    else:  # multistep: LR_STEP are epochs
        epoch = it / iters_per_epoch
        main = lr_factor_ ** bisect.bisect_right(sorted(lr_steps), epoch)
    return warm * main


def rho_warmup_factor(it: int, warmup_iters: int) -> float:
    """Multiplier of the sharpness radii at iteration ``it``: 0 -> 1 linearly over
    ``warmup_iters`` (the first step is a plain one), then 1."""
    return min(it / warmup_iters, 1.0) if warmup_iters > 0 else 1.0


def make_lr_factor(train_cfg, iters_per_epoch: int):
    """The per-iteration LR multiplier for ``TRAIN.*`` and its value at the end of the
    schedule (BSAM's ``lr_end_ratio``: each param group's rho_min anchor is its own LR times
    it).  Wrap the multiplier in ``LambdaLR`` and step it every iteration."""
    total = iters_per_epoch * (train_cfg.END_EPOCH - train_cfg.BEGIN_EPOCH)
    end_ratio = train_cfg.LR_END / train_cfg.LR if train_cfg.LR > 0 else 0.0
    factor = partial(lr_factor, kind=train_cfg.LR_SCHEDULER, iters_per_epoch=iters_per_epoch,
                     total_iters=total, warmup_iters=round(train_cfg.WARMUP_EPOCHS * iters_per_epoch),
                     lr_steps=list(train_cfg.LR_STEP), lr_factor_=train_cfg.LR_FACTOR,
                     end_ratio=end_ratio)
    return factor, factor(total)
