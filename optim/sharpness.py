"""What SAM, ASAM and BSAM share: a wrapper around a base optimizer that moves the weights
to a perturbed point, collects gradients there and hands one final gradient to the base.

Everything on the hot path is a multi-tensor (``torch._foreach_*``) operation over the
parameters of a param group; Python loops run over param groups, never over tensors' math.
Subclasses differ only in the passes that make them different (see ``sam.py``, ``bsam.py``).
"""
from __future__ import annotations

import math
import warnings
from typing import Callable

import torch
from torch import Tensor, nn
from torch.optim import Optimizer

from .bn import frozen_bn_stats

EPS = 1e-12  # the normative epsilon (docs/bsam_rule.md): e = rho * g / (||g|| + 1e-12)


class SharpnessAwareOptimizer(Optimizer):
    """Base of the sharpness-aware wrappers.

    ``base_optimizer`` is an optimizer class (``torch.optim.SGD``, ``Adam`` ...) built over
    the same ``param_groups`` dicts as this wrapper, so an LR scheduler attached to either
    sees the same learning rates.  Per-group keys (``rho`` ...) live in those dicts too.

    ``model``, when given, lets :meth:`step` keep its batch-norm running statistics still
    during the perturbed passes; without it, :meth:`step` freezes the batch-norm layers it
    sees running in the closure.  Passes run by hand need :func:`optim.frozen_bn_stats`.

    ``clip_grad_norm`` > 0 clips the gradient the base optimizer receives (SAM's perturbed
    gradient, BSAM's ``d``) to that global L2 norm.  The passes' own gradients are never
    clipped: the perturbation and BSAM's ||g1||/||g2|| ratio see them as they are.

    ``rho_scale`` (an attribute, default 1) multiplies every radius (rho, and BSAM's
    rho_min): set it each iteration for a rho warm-up from 0.
    """

    #: how many forward-backward passes one ``step(closure)`` runs
    passes = 1

    def __init__(
        self,
        params,
        base_optimizer: type[Optimizer],
        *,
        rho: float = 0.05,
        adaptive: bool = False,
        model: nn.Module | None = None,
        clip_grad_norm: float = 0.0,
        extra_defaults: dict | None = None,
        **base_kwargs,
    ):
        if not (isinstance(base_optimizer, type) and issubclass(base_optimizer, Optimizer)):
            raise ValueError(
                f"base_optimizer must be a torch.optim.Optimizer class such as torch.optim.SGD, "
                f"got {base_optimizer!r}"
            )
        if rho < 0:
            raise ValueError(f"rho must be >= 0, got {rho}")
        defaults = dict(rho=rho, adaptive=adaptive, **(extra_defaults or {}), **base_kwargs)
        super().__init__(params, defaults)
        self.base_optimizer = base_optimizer(self.param_groups, **base_kwargs)
        self.param_groups = self.base_optimizer.param_groups
        self.defaults.update(self.base_optimizer.defaults)
        self.model = model
        self.rho_scale = 1.0
        clip_before_step(self.base_optimizer, clip_grad_norm)
        #: diagnostics of the last step (floats), for logging
        self.last_stats: dict[str, float] = {}
        self._active: list[tuple[dict, list[Tensor]]] = []
        self._pending_update = False
        self._failed = False
        self._moved = False  # the weights sit away from w (w is in the "w" buffers)
        self._ascent_norm = 0.0  # the norm e_max was divided by (reused for e_min)

    # -- the closure API ----------------------------------------------------------------
    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None):
        """Run all passes with ``closure`` (zero grads, forward, backward, return the loss)
        and update the weights; returns the loss of the first pass (at the real weights).

        Without a closure, finish a step whose passes were run by hand (see
        :meth:`prepare_update`): this is what ``GradScaler.step(optimizer)`` calls.
        """
        if closure is None:
            if not self._pending_update:
                raise RuntimeError(
                    f"{type(self).__name__}.step() needs a closure, or call prepare_update() "
                    "after running the passes yourself"
                )
            self._pending_update = False
            return self.base_optimizer.step()
        closure = torch.enable_grad()(closure)
        loss = closure()
        if not self.ascend():
            self._warn_skip()
            return loss
        with frozen_bn_stats(self.model):
            self._perturbed_passes(closure)
        self.update()
        return loss

    def _perturbed_passes(self, closure: Callable[[], Tensor]) -> None:
        closure()

    def update(self) -> bool:
        """Restore the weights, write the final gradient and step the base optimizer.
        Returns False (and warns, leaving weights and base state unchanged) on a non-finite pass."""
        if not self.prepare_update():
            self._warn_skip()
            return False
        self.step()
        return True

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.base_optimizer.zero_grad(set_to_none=set_to_none)

    # -- the pass API shared by every method --------------------------------------------
    @torch.no_grad()
    def ascend(self) -> bool:
        """After the first backward (g0 at w): remember w and move to w + e_max.
        Returns False when ||g0|| is not finite (the step must then be skipped)."""
        self._active = [
            (group, [p for p in group["params"] if p.grad is not None]) for group in self.param_groups
        ]
        self._active = [(g, ps) for g, ps in self._active if ps]
        self._pending_update = self._moved = False
        grads = [_grads(ps) for _, ps in self._active]
        self.last_stats = {"grad_norm": _global_norm(grads)}
        self._ascent_norm = self._perturbation_norm(grads)
        self._failed = not (math.isfinite(self.last_stats["grad_norm"])
                            and math.isfinite(self._ascent_norm))
        if self._failed:
            return False
        self._keep_first_gradients(grads)
        for (group, params), g in zip(self._active, grads):
            torch._foreach_copy_(self._buffers(params, "w"), params)
            radius = group["rho"] * self.rho_scale
            self._move(params, g, radius / (self._ascent_norm + EPS), group["adaptive"])
        self._moved = True
        return True

    def prepare_update(self) -> bool:
        """After the last backward: restore the weights and leave the final gradient in
        ``p.grad``.  On a non-finite pass the gradients are filled with NaN (so that a
        ``GradScaler`` sees the overflow) and False is returned."""
        raise NotImplementedError

    # -- helpers for subclasses -----------------------------------------------------------
    def _perturbation_norm(self, grads: list[list[Tensor]]) -> float:
        """||g||, or ||w * g|| in adaptive mode (the norm ASAM divides by)."""
        if not any(group["adaptive"] for group, _ in self._active):
            return self.last_stats["grad_norm"]
        scaled = [
            torch._foreach_mul(torch._foreach_abs(ps), g) if group["adaptive"] else g
            for (group, ps), g in zip(self._active, grads)
        ]
        return _global_norm(scaled)

    @staticmethod
    def _move(params: list[Tensor], direction: list[Tensor], step: float, adaptive: bool,
              anchor: list[Tensor] | None = None) -> None:
        """params += step * direction (times anchor**2 element-wise in adaptive mode, where
        ``anchor`` is the unperturbed weight, default ``params``)."""
        if step == 0.0:
            return
        if adaptive:
            w = params if anchor is None else anchor
            scaled = torch._foreach_mul(direction, w)
            torch._foreach_mul_(scaled, w)
            torch._foreach_add_(params, scaled, alpha=step)
        else:
            torch._foreach_add_(params, direction, alpha=step)

    def _keep_first_gradients(self, grads: list[list[Tensor]]) -> None:
        """Hook (one list per active group): BSAM keeps g0 for the min side and for d."""

    def _restore(self) -> None:
        if self._moved:
            for _, params in self._active:
                torch._foreach_copy_(params, self._buffers(params, "w"))
        self._moved = False

    def _fail(self) -> bool:
        """Mark the step as skipped: weights back to w, gradients NaN for GradScaler."""
        self._failed = True
        self._restore()
        for _, params in self._active:
            torch._foreach_mul_(_grads(params), float("nan"))
        return False

    def _buffers(self, params: list[Tensor], name: str) -> list[Tensor]:
        """Persistent parameter-sized scratch tensors, allocated once."""
        out = []
        for p in params:
            state = self.state[p]
            if name not in state:
                state[name] = torch.empty_like(p, memory_format=torch.preserve_format)
            out.append(state[name])
        return out

    def _warn_skip(self) -> None:
        stats = ", ".join(f"{k}={v:.3g}" for k, v in self.last_stats.items())
        warnings.warn(f"{type(self).__name__}: non-finite gradient, step skipped ({stats})",
                      RuntimeWarning, stacklevel=3)

    # -- state --------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """The base optimizer's state; its param groups carry rho, rho_min and the LR
        anchors of the rho_min schedule.  Scratch buffers are not saved."""
        return self.base_optimizer.state_dict()

    def load_state_dict(self, state_dict: dict) -> None:
        self.base_optimizer.load_state_dict(state_dict)
        self.param_groups = self.base_optimizer.param_groups

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.base_optimizer!r})"


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


def _grads(params: list[Tensor]) -> list[Tensor]:
    return [p.grad for p in params]


def _global_norm(tensor_lists: list[list[Tensor]]) -> float:
    """L2 norm over every tensor of every list, as a Python float (one device sync)."""
    norms = [n for tensors in tensor_lists for n in torch._foreach_norm(tensors)]
    if not norms:
        return 0.0
    device = norms[0].device
    return torch.linalg.vector_norm(torch.stack([n.to(device) for n in norms])).item()
