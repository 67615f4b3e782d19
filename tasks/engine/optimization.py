"""The optimizer, LR schedule and rho warm-up of a run, built from ``TRAIN.*`` and ``SAM.*``.

Adam is built as SimpleBaseline and HRNet build it (``Adam(params, lr)``): betas from
``TRAIN.BETAS`` (default (0.9, 0.999)) and no weight decay; their ``GAMMA1``/``GAMMA2`` and an
Adam ``WD`` are keys the reference never applies (listed at start, see :mod:`.reference_keys`).
"""
from __future__ import annotations

from functools import partial

import torch

import optim

from .errors import UserError
from .schedule import make_lr_factor, rho_warmup_factor


def build_optimizer(cfg, params, model, iters_per_epoch: int):
    """``(optimizer, lr_scheduler, rho_scale)``: ``rho_scale(it)`` is the radius multiplier
    of iteration ``it`` (SAM.RHO_WARMUP_EPOCHS), for the wrappers' ``rho_scale``."""
    t, s = cfg.TRAIN, cfg.SAM
    factor, lr_end_ratio = make_lr_factor(t, iters_per_epoch)
    try:
        opt = optim.build(
            params, t.OPTIMIZER, lr=t.LR, weight_decay=weight_decay_of(t), momentum=t.MOMENTUM,
            nesterov=t.NESTEROV, betas=tuple(t.BETAS), method=s.METHOD, rho=s.RHO,
            rho_min=s.RHO_MIN, rho_min_end=s.RHO_MIN_END, lr_end_ratio=lr_end_ratio,
            adaptive=s.ADAPTIVE, reference_compat=s.REFERENCE_COMPAT, model=model,
            clip_grad_norm=t.CLIP_GRAD_NORM, interval=s.INTERVAL, reuse=s.REUSE,
            reuse_alpha=s.REUSE_ALPHA, perturb=s.PERTURB, fused=t.FUSED_OPTIMIZER)
    except ValueError as err:
        raise UserError(f"optimizer: {err}") from None
    rho_scale = partial(rho_warmup_factor, warmup_iters=round(s.RHO_WARMUP_EPOCHS * iters_per_epoch))
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor), rho_scale


def weight_decay_of(train_cfg) -> float:
    """``TRAIN.WD``, except for Adam, which the reference builds without weight decay
    (use ``adamw`` for decoupled weight decay)."""
    return 0.0 if train_cfg.OPTIMIZER == "adam" else train_cfg.WD


def optimizer_summary(cfg, opt) -> str:
    """One line saying what the run really optimizes with (betas, weight decay, radii)."""
    t, s = cfg.TRAIN, cfg.SAM
    base = getattr(opt, "base_optimizer", opt)
    settings = base.defaults
    parts = [f"optimizer: {t.OPTIMIZER} lr={t.LR:g} ({t.LR_SCHEDULER}"
             + (f", warm-up {t.WARMUP_EPOCHS:g} epochs)" if t.WARMUP_EPOCHS else ")")]
    if "betas" in settings:
        parts.append(f"betas=({settings['betas'][0]:g}, {settings['betas'][1]:g})")
    else:
        parts.append(f"momentum={settings['momentum']:g} nesterov={settings['nesterov']}")
    parts.append(f"weight_decay={settings['weight_decay']:g}" + (", fused" if settings.get("fused") else ""))
    if s.METHOD != "none":
        radii = f"{s.METHOD} rho={s.RHO:g}"
        if s.METHOD == "bsam":
            end = "" if s.RHO_MIN_END is None else f"->{s.RHO_MIN_END:g}"
            radii += f" rho_min={s.RHO_MIN:g}{end}"
        if s.RHO_WARMUP_EPOCHS:
            radii += f" (warm-up {s.RHO_WARMUP_EPOCHS:g} epochs)"
        if s.INTERVAL > 1:
            between = "g0" if s.REUSE == "none" else f"LookSAM reuse alpha={s.REUSE_ALPHA:g}"
            radii += f", full step 1 in {s.INTERVAL} ({between} between, {opt.mean_passes:.2f} passes/step)"
        if s.PERTURB == "local":
            radii += ", local perturbation (each process's own micro-batch)"
        parts.append(radii)
    parts.append(f"clip_grad_norm={t.CLIP_GRAD_NORM:g}" if t.CLIP_GRAD_NORM > 0 else "no clipping")
    return " ".join(parts[:1]) + ": " + ", ".join(parts[1:])
