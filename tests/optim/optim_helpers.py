"""Small models and a by-hand implementation of the normative update rules."""
from __future__ import annotations

import copy

import torch
from torch import nn
from torch.func import functional_call


def tiny_mlp(seed: int = 0, bn: bool = False) -> nn.Module:
    torch.manual_seed(seed)
    layers = [nn.Linear(5, 7)]
    if bn:
        layers.append(nn.BatchNorm1d(7))
    layers += [nn.Tanh(), nn.Linear(7, 3)]
    return nn.Sequential(*layers).double()


def batch(seed: int = 1, n: int = 12):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 5, generator=g).double(), torch.randint(0, 3, (n,), generator=g)


def loss_fn(model, x, y):
    return nn.functional.cross_entropy(model(x), y)


def closure_for(model, opt, x, y):
    def closure():
        opt.zero_grad()
        loss = loss_fn(model, x, y)
        loss.backward()
        return loss
    return closure


def grads_at(model, weights: dict, x, y) -> dict:
    names = list(weights)
    params = {k: v.detach().clone().requires_grad_(True) for k, v in weights.items()}
    loss = nn.functional.cross_entropy(functional_call(model, params, (x,)), y)
    return dict(zip(names, torch.autograd.grad(loss, [params[k] for k in names])))


def norm(d: dict) -> torch.Tensor:
    return torch.sqrt(sum((v ** 2).sum() for v in d.values()))


def reference_direction(model, weights, x, y, method, rho, rho_min, adaptive=False):
    """The update direction of docs/bsam_rule.md written out in full, on dicts of tensors."""
    eps = 1e-12
    g0 = grads_at(model, weights, x, y)
    scale = {k: (w.abs() if adaptive else torch.ones_like(w)) for k, w in weights.items()}
    n0 = norm({k: scale[k] * g0[k] for k in g0})
    e_dir = {k: scale[k] ** 2 * g0[k] / (n0 + eps) for k in g0}
    g1 = grads_at(model, {k: weights[k] + rho * e_dir[k] for k in weights}, x, y)
    if method == "sam":
        return g1
    g2 = grads_at(model, {k: weights[k] - rho_min * e_dir[k] for k in weights}, x, y)
    ratio = norm(g1) / norm(g2)
    return {k: g1[k] + g0[k] - ratio * g2[k] for k in g0}


def step_with_gradient(model_copy, base_opt, direction: dict):
    """Give ``direction`` to a plain base optimizer as the gradient."""
    for name, p in model_copy.named_parameters():
        p.grad = direction[name].clone()
    base_opt.step()


def clone(model):
    return copy.deepcopy(model)
