"""The GPU speed switches of a run: mixed precision (bf16 autocast, fp16 with a GradScaler),
channels-last memory layout, SyncBatchNorm and ``torch.compile``.  All are off by default
because each changes the numerics (or, for compile, the start-up time)."""
from __future__ import annotations

import contextlib
import re
from typing import Callable

import torch
from torch import nn

from optim.bn import frozen_bn_stats

from .errors import UserError


def autocast(amp: str, device: torch.device):
    if amp in ("bf16", "fp16"):
        dtype = torch.bfloat16 if amp == "bf16" else torch.float16
        return torch.autocast(device.type, dtype=dtype)
    return contextlib.nullcontext()


def make_scaler(amp: str, device: torch.device):
    """A GradScaler for fp16 (its gradients underflow without one), else ``None``."""
    if amp != "fp16":
        return None
    if device.type != "cuda":
        raise UserError("AMP: fp16 needs a CUDA GPU (float16 training on the CPU is not supported); "
                        "use AMP bf16 or none on this machine")
    return torch.amp.GradScaler("cuda")


def scaled_step(optimizer, scaler, run_pass: Callable[[], torch.Tensor]) -> None:
    """One optimizer step with every pass's loss scaled by ``scaler``, through the optimizer's
    pass API (README, "Your own passes"): one pass for SGD/Adam, two for SAM, three for BSAM.
    ``run_pass`` zeroes the gradients, runs forward and the scaled backward.  The wrappers'
    norm ratios are scale-invariant; a non-finite pass leaves non-finite gradients, so the
    scaler skips the step and lowers the scale."""
    run_pass()
    if hasattr(optimizer, "ascend") and optimizer.ascend():
        with frozen_bn_stats(optimizer.model):
            run_pass()
            if hasattr(optimizer, "descend_to_min") and optimizer.descend_to_min():
                run_pass()
        optimizer.prepare_update()
    scaler.step(optimizer)
    scaler.update()


def prepare_model(model: nn.Module, cfg, device: torch.device, world: int) -> nn.Module:
    """SyncBatchNorm (over several CUDA ranks) and the channels-last layout."""
    if cfg.MODEL.SYNC_BN and world > 1:
        if device.type != "cuda":
            raise UserError("MODEL.SYNC_BN needs CUDA devices (SyncBatchNorm has no CPU implementation); "
                            "set MODEL.SYNC_BN false for a CPU run")
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if cfg.CHANNELS_LAST:
        model = model.to(memory_format=torch.channels_last)
    return model


def compile_model(net: nn.Module, backend: str) -> nn.Module:
    """``torch.compile`` of what the passes run through.  The perturbed passes of SAM/BSAM
    change only weight values (in place) and batch-norm's ``track_running_stats``, so the
    graph is compiled once per BN mode, not once per step."""
    if backend == "none":
        return net
    return torch.compile(net, backend=backend)


def gpu_count(gpus) -> int:
    """How many devices HRNet's ``GPUS`` key lists: ``(0,1,2,3)``, ``[0, 1]``, ``0`` ..."""
    if gpus is None:
        return 0
    if isinstance(gpus, (list, tuple)):
        return len(gpus)
    return len(re.findall(r"\d+", str(gpus)))


def launch_hint(gpus, world: int, batch_per_gpu: int, cfg_source: str) -> str | None:
    """The start-up line when the config lists several GPUs but this run is one process."""
    count = gpu_count(gpus)
    if count <= 1 or world > 1:
        return None
    return (f"GPUS lists {count} devices but this run is one process (total batch {batch_per_gpu}); "
            f"to train on all of them run: torchrun --nproc_per_node {count} tools/train.py "
            f"--cfg {cfg_source} (total batch {count} x {batch_per_gpu} = {count * batch_per_gpu})")
