"""torchrun/DDP plumbing: one process per device, NCCL on GPUs and gloo on CPUs.

NCCL only moves CUDA tensors, so every collective here runs on a tensor of the run's
device (``_DEVICE``, set by :func:`init_from_env`), objects included: they travel as
pickled byte tensors.  Code that works on gloo/CPU therefore works on NCCL/CUDA too.
"""
from __future__ import annotations

import os
import pickle

import torch
import torch.distributed as dist

_DEVICE = torch.device("cpu")  # where collective tensors live (the run's device)


def launched_by_torchrun() -> bool:
    """torchrun (or any env:// launcher) describes the group in the environment; then a
    group is made even at world size 1, so one GPU exercises the whole distributed path."""
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"))


def init_from_env(device: torch.device) -> tuple[int, int]:
    """Bind this process to ``device`` and join the group torchrun describes.
    Returns ``(rank, world_size)``; ``(0, 1)`` when not launched by torchrun."""
    global _DEVICE
    _DEVICE = device
    if device.type == "cuda":
        torch.cuda.set_device(device)  # before any collective: else every rank uses GPU 0
    if not launched_by_torchrun():
        return 0, 1
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size()


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def barrier() -> None:
    if is_distributed():
        if _DEVICE.type == "cuda":
            dist.barrier(device_ids=[_DEVICE.index])
        else:
            dist.barrier()


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over ranks (a copy on the input's device; the input is left alone)."""
    if not is_distributed():
        return values.clone()
    out = values.to(_DEVICE, copy=True)
    dist.all_reduce(out)
    return out.to(values.device)


def any_rank(flag: bool) -> bool:
    """True on every rank when ``flag`` is true on at least one: one agreed decision (e.g.
    to stop after this iteration because one rank got a SIGTERM)."""
    if not is_distributed():
        return flag
    box = torch.tensor([int(flag)], dtype=torch.int32, device=_DEVICE)
    dist.all_reduce(box, op=dist.ReduceOp.MAX)
    return bool(box.item())


def all_gather_objects(obj) -> list:
    """Every rank's ``obj`` (picklable, CPU tensors only), in rank order, on every rank."""
    if not is_distributed():
        return [obj]
    payload = torch.frombuffer(bytearray(pickle.dumps(obj)), dtype=torch.uint8).to(_DEVICE)
    world = dist.get_world_size()
    sizes = [torch.zeros(1, dtype=torch.int64, device=_DEVICE) for _ in range(world)]
    dist.all_gather(sizes, torch.tensor([payload.numel()], dtype=torch.int64, device=_DEVICE))
    longest = int(max(s.item() for s in sizes))
    padded = torch.zeros(longest, dtype=torch.uint8, device=_DEVICE)
    padded[: payload.numel()] = payload
    received = [torch.empty(longest, dtype=torch.uint8, device=_DEVICE) for _ in range(world)]
    dist.all_gather(received, padded)
    return [pickle.loads(r[: int(s.item())].cpu().numpy().tobytes())
            for r, s in zip(received, sizes)]


def gather_to_main(obj) -> list | None:
    """Every rank's ``obj`` in rank order on rank 0, ``None`` on the others."""
    objects = all_gather_objects(obj)
    return objects if not is_distributed() or dist.get_rank() == 0 else None


def broadcast_object(obj, src: int = 0):
    """Rank ``src``'s ``obj`` on every rank."""
    if not is_distributed():
        return obj
    return all_gather_objects(obj if dist.get_rank() == src else None)[src]


def shutdown() -> None:
    """Leave the group in order: every rank reaches the barrier before any destroys it
    (a rank that tears the group down while another still talks aborts that one)."""
    if is_distributed():
        barrier()
        dist.destroy_process_group()
