"""Joints MSE loss with target weights (SimpleBaseline's heatmap loss).

Convention of the reference: for each joint, ``0.5 * mean((w * pred - w * gt) ** 2)``, then
the mean over joints; the 0.5 (from 1/2 ||.||^2) only rescales the gradient, but keeping
it makes loss values and learning rates comparable with published logs.
"""
from __future__ import annotations

import torch


def joints_mse_loss(pred: torch.Tensor, target: torch.Tensor, target_weight: torch.Tensor | None) -> torch.Tensor:
    """``pred``/``target`` are ``(N, J, H, W)``; ``target_weight`` ``(N, J, 1)`` or ``None``.

    Equal to the reference's per-joint loop: the mean over N*H*W of each joint, averaged
    over the J joints, is the mean over every element.
    """
    diff = pred - target
    if target_weight is not None:
        diff = diff * target_weight.reshape(*target_weight.shape[:2], 1, 1)
    return 0.5 * diff.pow(2).mean()
