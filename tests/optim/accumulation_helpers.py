"""Steps over micro-batches through ``optim.run_step``, and the local-perturbation rule by hand."""
from __future__ import annotations

import contextlib

import torch

import optim
from optim_helpers import loss_fn, reference_direction

METHODS = ("none", "adam", "sam", "bsam")  # "adam": plain Adam; the others over SGD


def build(model, method: str, **kw):
    if method == "adam":
        return optim.build(model.parameters(), "adam", lr=0.01, weight_decay=1e-3)
    return optim.build(model.parameters(), "sgd", lr=0.1, momentum=0.9, weight_decay=1e-3,
                       method=method, rho_min_end=0.0, model=model, **kw)


def micro_step(model, opt, x, y, pieces: int, no_sync=contextlib.nullcontext):
    """One optimizer step on (x, y) as ``pieces`` equal micro-batches, each loss weighted by
    its share, the way the trainer runs TRAIN.ACCUMULATE_STEPS."""
    xs, ys = x.chunk(pieces), y.chunk(pieces)

    def run_pass(i):
        loss = loss_fn(model, xs[i], ys[i])
        (loss * (len(ys[i]) / len(y)) if pieces > 1 else loss).backward()
        return loss

    return optim.run_step(opt, run_pass, micro_batches=pieces, no_sync=no_sync)


def local_direction(model, x, y, method: str, pieces: int) -> dict:
    """SAM.PERTURB local by hand: each micro-batch's own direction, weighted by its share."""
    weights = {k: v.detach().clone() for k, v in model.named_parameters()}
    total = None
    for xi, yi in zip(x.chunk(pieces), y.chunk(pieces)):
        d = reference_direction(model, weights, xi, yi, method, 0.05, 0.05)
        share = len(yi) / len(y)
        total = {k: share * v for k, v in d.items()} if total is None else \
            {k: total[k] + share * v for k, v in d.items()}
    return total


def step_with(model, base_opt, direction: dict) -> None:
    for name, p in model.named_parameters():
        p.grad = direction[name].clone()
    base_opt.step()


def plain_sgd(model):
    return torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
