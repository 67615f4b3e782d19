"""torchrun/DDP plumbing: one process per device, NCCL on GPUs and gloo on CPUs."""
from __future__ import annotations

import os

import torch
import torch.distributed as dist


def init_from_env(device_kind: str) -> tuple[int, int]:
    """Join the process group that ``torchrun`` describes in the environment.
    Returns ``(rank, world_size)``; ``(0, 1)`` when not launched by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device_kind == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size()


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over ranks (a copy; the input is left alone)."""
    out = values.clone()
    if is_distributed():
        dist.all_reduce(out)
    return out


def broadcast_object(obj, src: int = 0):
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def shutdown() -> None:
    if is_distributed():
        dist.destroy_process_group()
