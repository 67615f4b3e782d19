"""Multi-tensor helpers the wrappers share: global norms and dot products over lists of
gradient lists (one device sync each), detaching and summing gradients, averaging them over
the processes in one collective, clipping before a step."""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor
from torch.optim import Optimizer


def grads_of(params: list[Tensor]) -> list[Tensor]:
    return [p.grad for p in params]


def global_norm(tensor_lists: list[list[Tensor]]) -> float:
    """L2 norm over every tensor of every list, as a Python float (one device sync)."""
    norms = [n for tensors in tensor_lists for n in torch._foreach_norm(tensors)]
    if not norms:
        return 0.0
    device = norms[0].device
    return torch.linalg.vector_norm(torch.stack([n.to(device) for n in norms])).item()


def global_dot(a_lists: list[list[Tensor]], b_lists: list[list[Tensor]]) -> float:
    """Sum of the element-wise products of two equally shaped lists of tensor lists."""
    dots = [torch.dot(a.reshape(-1), b.reshape(-1))
            for a_list, b_list in zip(a_lists, b_lists) for a, b in zip(a_list, b_list)]
    if not dots:
        return 0.0
    device = dots[0].device
    return torch.stack([d.to(device) for d in dots]).sum().item()


def detach_gradients(params: list[Tensor], grads: list[Tensor]) -> list[Tensor]:
    """Keep ``grads`` and unhook them from ``params``, so that the closure's zero_grad and
    the next backward cannot touch them.  A gradient that is a view (a DDP bucket with
    ``gradient_as_bucket_view=True``) would be overwritten by the next backward: copy it."""
    kept = [g if g._base is None else g.clone() for g in grads]
    for p in params:
        p.grad = None
    return kept


def clip_before_step(optimizer: Optimizer, max_norm: float) -> None:
    """Make ``optimizer.step()`` first clip the global L2 norm of its parameters' gradients
    to ``max_norm`` (nothing when ``max_norm`` <= 0).  The gradients must be in place before
    ``step`` is called: a closure would run after the clipping, so one is refused."""
    if max_norm <= 0:
        return

    def clip(opt, args, kwargs):  # args: (optimizer, closure?)
        if (len(args) > 1 and args[1] is not None) or kwargs.get("closure") is not None:
            raise ValueError("with clip_grad_norm, run the backward pass first and call "
                             "step() without a closure")
        params = [p for group in opt.param_groups for p in group["params"] if p.grad is not None]
        torch.nn.utils.clip_grad_norm_(params, max_norm)

    optimizer.register_step_pre_hook(clip)


def add_into(total: dict[Tensor, Tensor], params: list[Tensor], grads: list[Tensor]) -> None:
    """total[p] += g for each parameter; a parameter seen the first time keeps ``g`` itself
    (which no later backward may write: see :func:`detach_gradients`)."""
    seen = [p in total for p in params]
    pairs = [(total[p], g) for p, g, old in zip(params, grads, seen) if old]
    if pairs:
        torch._foreach_add_([t for t, _ in pairs], [g for _, g in pairs])
    total.update((p, g) for p, g, old in zip(params, grads, seen) if not old)


def average_across_processes(tensors: list[Tensor]) -> None:
    """Replace each tensor by its mean over the processes of the default group, in one
    all-reduce of one flat buffer (nothing in a single process)."""
    if not tensors or not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat)
    flat.div_(dist.get_world_size())
    pieces = flat.split([t.numel() for t in tensors])
    torch._foreach_copy_(tensors, [piece.view_as(t) for piece, t in zip(pieces, tensors)])
