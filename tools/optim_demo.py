"""A one-minute look at the optimizers: SGD, SAM and BSAM on the same generated problem.

A small MLP learns noisy concentric rings; each method gets the same data, seed and
schedule.  Prints train loss, test accuracy and BSAM's diagnostics.
"""
from __future__ import annotations

import math
import time

import torch
from torch import nn

import optim


def rings(n: int, seed: int, noise: float = 0.15):
    g = torch.Generator().manual_seed(seed)
    label = torch.randint(0, 3, (n,), generator=g)
    angle = torch.rand(n, generator=g) * 2 * math.pi
    radius = 1.0 + label.float() + noise * torch.randn(n, generator=g)
    x = torch.stack([radius * angle.cos(), radius * angle.sin()], 1)
    flip = torch.rand(n, generator=g) < 0.1  # 10% label noise
    label = torch.where(flip, torch.randint(0, 3, (n,), generator=g), label)
    return x, label


def run(method: str, epochs: int = 60) -> dict:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 64), nn.BatchNorm1d(64), nn.ReLU(), nn.Linear(64, 64),
                          nn.BatchNorm1d(64), nn.ReLU(), nn.Linear(64, 3))
    x, y = rings(2000, seed=1)
    xt, yt = rings(2000, seed=2)
    opt = optim.build(model.parameters(), "sgd", lr=0.1, momentum=0.9, weight_decay=5e-4,
                      method=method, rho=0.05, rho_min=0.05, rho_min_end=0.0, model=model)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * 16)
    start = time.perf_counter()
    for _ in range(epochs):
        for idx in torch.randperm(len(x)).split(128):
            def closure():
                opt.zero_grad()
                loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
                loss.backward()
                return loss
            loss = opt.step(closure)
            sched.step()
    model.eval()
    with torch.no_grad():
        acc = (model(xt).argmax(1) == yt).float().mean().item()
    stats = getattr(opt, "last_stats", {})
    return dict(method=method, loss=loss.item(), acc=acc, seconds=time.perf_counter() - start,
                cos=stats.get("cos_g0_g2", float("nan")))


def main() -> None:
    print(f"{'method':8} {'last loss':>9} {'test acc':>8} {'cos(g0,g2)':>10} {'time s':>7}")
    for method in ("none", "sam", "bsam"):
        r = run(method)
        print(f"{r['method']:8} {r['loss']:9.4f} {r['acc']:8.3f} {r['cos']:10.3f} {r['seconds']:7.1f}")


if __name__ == "__main__":
    main()
