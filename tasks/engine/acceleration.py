"""The GPU speed switches of a run: mixed precision (bf16 autocast, fp16 with a GradScaler),
channels-last memory layout, SyncBatchNorm and ``torch.compile``.  All are off by default
because each changes the numerics (or, for compile, the start-up time); ``AMP: auto`` turns
bf16 on only where the hardware runs it natively (emulated bf16 is slower than float32)."""
from __future__ import annotations

import contextlib
import re

import torch
from torch import nn

from .errors import UserError


def bf16_support(device: torch.device) -> tuple[bool, str]:
    """Whether ``device`` computes in bfloat16 natively, and the evidence for the log.  On a
    CPU that takes AVX512-BF16 or AMX instructions: oneDNN runs bf16 on any AVX-512 CPU, but
    without them it converts every value and is slower than float32."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        if torch.cuda.is_bf16_supported():
            return True, f"{name} supports bfloat16"
        return False, f"{name} has no bfloat16 support"
    if device.type != "cpu":
        return False, f"no bfloat16 check for device type {device.type}"
    probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    if None in probes or not torch.backends.mkldnn.is_available():
        return False, f"this torch {torch.__version__} build cannot tell whether the CPU has bfloat16 instructions"
    avx512_bf16, amx = (probe() for probe in probes)
    if avx512_bf16 or amx:
        found = " and ".join(n for n, ok in (("AVX512-BF16", avx512_bf16), ("AMX", amx)) if ok)
        return True, f"the CPU has {found} instructions"
    return False, "the CPU has neither AVX512-BF16 nor AMX instructions (bfloat16 would be emulated, slower)"


def resolve_amp(amp: str, device: torch.device) -> tuple[str, str]:
    """The precision a run uses (``none``, ``bf16`` or ``fp16``) and a log line saying why."""
    if amp != "auto":
        return amp, f"precision: {_PRECISION[amp]} (AMP {amp}, as configured)"
    supported, why = bf16_support(device)
    chosen = "bf16" if supported else "none"
    return chosen, f"precision: {_PRECISION[chosen]} (AMP auto on {device.type}: {why})"


_PRECISION = {"none": "float32", "bf16": "bfloat16 autocast", "fp16": "float16 autocast with a GradScaler"}


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
