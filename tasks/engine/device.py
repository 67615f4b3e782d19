"""Which device this process computes on, from ``DEVICE`` and its torchrun local rank."""
from __future__ import annotations

import torch

from . import distributed as dist
from .errors import UserError


def pick_device(name: str) -> torch.device:
    """``DEVICE`` auto | cpu | cuda -> this process's device (one GPU per torchrun process)."""
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("DEVICE: cuda was asked for but no CUDA device is available; "
                        "use DEVICE auto or cpu")
    if name == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    if dist.local_rank() >= torch.cuda.device_count():
        raise UserError(f"LOCAL_RANK {dist.local_rank()} but this machine has {torch.cuda.device_count()} "
                        "CUDA device(s); start at most that many processes per machine (torchrun "
                        "--nproc_per_node), or use DEVICE cpu")
    return torch.device("cuda", dist.local_rank())
