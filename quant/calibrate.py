"""Activation calibration: set every input quantizer's sign and step size from real batches.

The float network is run (weight and activation quantizers pass their inputs through
untouched) so each layer sees the activations the QAT model should approximate; BatchNorm statistics are not changed
(eval mode).  Under torch.distributed every rank must call :func:`calibrate`; the statistics
are reduced so all ranks start from identical step sizes.
"""
from __future__ import annotations

import itertools
from typing import Iterable

import torch
from torch import nn

from .lsq import LsqQuantizer


def activation_quantizers(model: nn.Module) -> dict[str, LsqQuantizer]:
    return {n: m for n, m in model.named_modules() if isinstance(m, LsqQuantizer) and m.activation}


def _inputs(batch):
    """The model input of a batch: the batch itself or the first item of a tuple/list/dict."""
    if isinstance(batch, torch.Tensor):
        return batch
    if isinstance(batch, (list, tuple)) and batch:
        return batch[0]
    if isinstance(batch, dict) and "image" in batch:
        return batch["image"]
    raise ValueError(f"cannot find the model input in a batch of type {type(batch).__name__}")


@torch.no_grad()
def calibrate(model: nn.Module, batches: Iterable, num_batches: int, device=None) -> int:
    """Initialise the activation quantizers of ``model`` from up to ``num_batches`` batches.

    Returns the number of batches used.  Quantizers that saw no input (a branch never taken)
    keep initialising themselves from their first training batch.
    """
    if num_batches < 1:
        raise ValueError(f"num_batches={num_batches} must be >= 1")
    quantizers = activation_quantizers(model)
    if device is None:
        device = next(model.parameters()).device
    weight_quantizers = [m for m in model.modules() if isinstance(m, LsqQuantizer) and not m.activation]
    was_training = model.training
    model.eval()
    for q in quantizers.values():
        q.begin_observing()
    for q in weight_quantizers:
        q.enabled = False
    used = 0
    try:
        for batch in itertools.islice(batches, num_batches):
            model(_inputs(batch).to(device, non_blocking=True))
            used += 1
    finally:
        stats = [q.end_observing() for q in quantizers.values()]
        for q in weight_quantizers:
            q.enabled = True
        model.train(was_training)
    if not quantizers:
        return used
    table = torch.tensor(
        [[s["mean_abs"], s["batches"], -s["min"] if s["batches"] else -float("inf")] for s in stats],
        dtype=torch.float64, device=device,
    )
    table = _reduce_across_ranks(table)
    for q, (mean_abs_sum, seen, neg_min) in zip(quantizers.values(), table.tolist()):
        if seen > 0:
            q.init_from_stats(mean_abs_sum / seen, -neg_min)
    return used


def _reduce_across_ranks(table: torch.Tensor) -> torch.Tensor:
    """Sum the mean|x| and batch columns and take the global minimum over ranks."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return table
    sums, neg_min = table[:, :2].contiguous(), table[:, 2:].contiguous()
    dist.all_reduce(sums, op=dist.ReduceOp.SUM)
    dist.all_reduce(neg_min, op=dist.ReduceOp.MAX)
    return torch.cat([sums, neg_min], dim=1)
