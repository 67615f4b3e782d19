"""Keep batch-norm running statistics still during the perturbed passes.

A sharpness-aware step runs the same batch through the network two or three times.  Only
the first pass sees the real weights, so only it may move the running mean/variance; the
perturbed passes must still normalise with the batch's own statistics (as training does).
Turning ``track_running_stats`` off for the duration does exactly that, and also leaves
``num_batches_tracked`` alone, which a momentum-0 trick would not.
"""
from __future__ import annotations

from contextlib import contextmanager

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.module import register_module_forward_pre_hook


@contextmanager
def frozen_bn_stats(model: nn.Module | None = None):
    """Within the block, batch-norm layers of ``model`` use batch statistics but do not
    update their running buffers.  ``None``: every batch-norm layer that runs within the
    block (found by a forward pre-hook as it is called), for a wrapper given no model."""
    layers = [] if model is None else [
        m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats
    ]
    for layer in layers:
        layer.track_running_stats = False

    def freeze_on_call(module, args):
        if isinstance(module, _BatchNorm) and module.track_running_stats:
            module.track_running_stats = False
            layers.append(module)

    hook = register_module_forward_pre_hook(freeze_on_call) if model is None else None
    try:
        yield
    finally:
        if hook is not None:
            hook.remove()
        for layer in layers:
            layer.track_running_stats = True
