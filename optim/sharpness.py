"""What SAM, ASAM and BSAM share: a wrapper around a base optimizer that moves the weights
to a perturbed point, collects gradients there and hands one final direction to the base.

A step is a short sequence of passes (forward and backward of the same batch) with a move
of the weights between two of them; :func:`run_step` is the one place that sequence is
written, for ``step(closure)``, for a ``GradScaler`` and for the trainer.  Between the
passes the optimizer's :class:`StepState` says where the weights are and what it holds.

Everything on the hot path is a multi-tensor (``torch._foreach_*``) operation over the
parameters of a param group; Python loops run over param groups, never over tensors' math.
Subclasses differ only in the passes that make them different (see ``sam.py``, ``bsam.py``).
"""
from __future__ import annotations

import contextlib
import enum
import math
import warnings
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor, nn
from torch.optim import Optimizer

from .bn import frozen_bn_stats
from .cycle import REUSE_RULES, Cycle
from .tensors import (add_into, average_across_processes, clip_before_step, detach_gradients,
                      global_norm, grads_of)

EPS = 1e-12  # the normative epsilon (docs/bsam_rule.md): e = rho * g / (||g|| + 1e-12)
#: whose gradient a perturbation follows: ``global`` the whole step's batch (all processes,
#: all micro-batches), ``local`` each process's own micro-batch
PERTURB_RULES = ("global", "local")


class Phase(enum.Enum):
    """Where a step stands: what the weights are and what the next backward computes."""
    IDLE = "no step in progress"
    AT_MAX = "weights at w + e_max; the next backward gives g1"
    AT_MIN = "weights at w - e_min with g1 held; the next backward gives g2"
    AT_W = "a step between full steps: weights at w, g0 in p.grad"
    READY = "the final direction is in p.grad; the base step is next"
    FAILED = "a pass was non-finite: weights at w, gradients NaN, the step is skipped"
    SKIPPED = "a failed step was prepared: gradients NaN, no base step follows"


@dataclass
class StepState:
    """What one step holds between its passes (all norms in the units of ``p.grad``)."""
    #: each param group that has gradients, with those parameters
    groups: list[tuple[dict, list[Tensor]]]
    #: a full sharpness-aware step (else a plain or reused step, see ``interval``)
    full: bool = True
    phase: Phase = Phase.IDLE
    #: the gradient norms of the passes: grad_norm (g0), perturbed_grad_norm (g1), min_grad_norm (g2)
    norms: dict[str, float] = field(default_factory=dict)
    #: the norm e_max and e_min divide by: ||g0||, or ||w g0|| in adaptive mode
    perturbation_norm: float = math.nan
    #: g0 and g1, kept out of ``p.grad`` while later passes run (one list per group)
    g0: list[list[Tensor]] = field(default_factory=list)
    g1: list[list[Tensor]] = field(default_factory=list)
    #: scale-free diagnostics (cosines, the radius used, the reuse factor)
    extras: dict[str, float] = field(default_factory=dict)

    @property
    def moved(self) -> bool:
        """The weights sit away from w (w is in the optimizer's "w" buffers)."""
        return self.phase in (Phase.AT_MAX, Phase.AT_MIN)


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

    ``interval`` = k runs the full sharpness-aware step on one step in k and a one-pass step
    with g0 on the others; ``reuse="look"`` (LookSAM) then hands the base optimizer
    g0 + reuse_alpha * (||g0|| / ||v||) * v, where v is the part of the last full step's
    direction orthogonal to its g0 (docs/bsam_rule.md, "Cheaper steps").

    ``perturb="local"`` perturbs each process (and, with accumulation, each micro-batch)
    with its own gradient ("m-sharpness"): run every backward of the step without gradient
    synchronisation (DDP's ``no_sync``; :func:`run_step` does) and the optimizer averages the
    final direction over the processes in one all-reduce before the base step.

    ``rho_scale`` (an attribute, default 1) multiplies every radius (rho, and BSAM's
    rho_min): set it each iteration for a rho warm-up from 0.
    """

    #: how many forward-backward passes a full step runs
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
        interval: int = 1,
        reuse: str = "none",
        reuse_alpha: float = 0.7,
        perturb: str = "global",
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
        _check_cheap_steps(interval, reuse, reuse_alpha)
        if perturb not in PERTURB_RULES:
            raise ValueError(f"perturb must be one of {', '.join(PERTURB_RULES)}, got {perturb!r}")
        defaults = dict(rho=rho, adaptive=adaptive, **(extra_defaults or {}), **base_kwargs)
        super().__init__(params, defaults)
        self.base_optimizer = base_optimizer(self.param_groups, **base_kwargs)
        self.param_groups = self.base_optimizer.param_groups
        self.defaults.update(self.base_optimizer.defaults)
        self.model = model
        self.rho_scale = 1.0
        self.interval, self.reuse, self.reuse_alpha = interval, reuse, reuse_alpha
        self.perturb = perturb
        clip_before_step(self.base_optimizer, clip_grad_norm)
        #: diagnostics of the last step (floats, in the gradients' true units), for logging
        self.last_stats: dict[str, float] = {}
        self._step = StepState(groups=[])
        #: what lasts from step to step: the step count and LookSAM's held direction
        self.cycle = Cycle()
        #: local perturbation with micro-batches: the directions (and LookSAM's v) of the
        #: micro-batches done so far in this optimizer step, summed per parameter
        self._direction_sum: dict[Tensor, Tensor] = {}
        self._v_sum: dict[Tensor, Tensor] = {}

    @property
    def mean_passes(self) -> float:
        """Forward-backward passes per step on average: 1 + (passes - 1) / interval."""
        return 1 + (self.passes - 1) / self.interval

    @property
    def reference_group(self) -> dict:
        """The param group whose radius the logs report: the first one with gradients
        (group 0 unless it has none).  The rule itself treats every group alike."""
        return self._step.groups[0][0]

    # -- the closure API ----------------------------------------------------------------
    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None):
        """Run all passes with ``closure`` (zero grads, forward, backward, return the loss)
        and update the weights; returns the loss of the first pass (at the real weights).

        Without a closure, take the base step of a step whose passes were run by hand
        (after :meth:`prepare_update`): this is what ``GradScaler.step(optimizer)`` calls.
        """
        if closure is not None:
            with_grad = torch.enable_grad()(closure)
            return run_step(self, lambda _: with_grad())[0]
        if self._step.phase is not Phase.READY:
            raise RuntimeError(
                f"{type(self).__name__}.step() needs a closure, or call prepare_update() "
                "after running the passes yourself"
            )
        self._step.phase = Phase.IDLE
        return self.base_optimizer.step()

    def update(self) -> bool:
        """Finish a step run by hand: prepare the final direction (unless
        :meth:`prepare_update` already did) and step the base optimizer.  Returns False (and
        warns, leaving weights and base state unchanged) on a non-finite pass."""
        if self._step.phase not in (Phase.READY, Phase.SKIPPED):
            self.prepare_update()
        if self._step.phase is Phase.SKIPPED:
            self._warn_skip()
            return False
        self.step()
        return True

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.base_optimizer.zero_grad(set_to_none=set_to_none)

    # -- the pass API shared by every method --------------------------------------------
    @torch.no_grad()
    def ascend(self) -> bool:
        """After the first backward (g0 at w): on a full step remember w and move to
        w + e_max.  Returns True when the perturbed passes are to run: False on a step
        between full steps (see ``interval``) and when ||g0|| is not finite."""
        if self._step.moved:
            raise RuntimeError(f"{type(self).__name__}.ascend() in the middle of a step (the "
                               "weights are perturbed); finish the step with update() first")
        groups = [(group, [p for p in group["params"] if p.grad is not None])
                  for group in self.param_groups]
        s = self._step = StepState(groups=[(g, ps) for g, ps in groups if ps],
                                   full=self.cycle.is_full(self.interval))
        grads = [grads_of(ps) for _, ps in s.groups]
        s.norms["grad_norm"] = global_norm(grads)
        s.perturbation_norm = self._perturbation_norm(grads) if s.full else s.norms["grad_norm"]
        if not (math.isfinite(s.norms["grad_norm"]) and math.isfinite(s.perturbation_norm)):
            self._fail()
            return False
        if not s.full:
            s.phase = Phase.AT_W
            return False
        if self._holds_g0():
            s.g0 = [detach_gradients(ps, gs) for (_, ps), gs in zip(s.groups, grads)]
        for (group, params), g in zip(s.groups, grads):
            torch._foreach_copy_(self._buffers(params, "w"), params)
            radius = group["rho"] * self.rho_scale
            self._move(params, g, radius / (s.perturbation_norm + EPS), group["adaptive"])
        s.phase = Phase.AT_MAX
        return True

    def advance(self) -> bool:
        """After a perturbed pass's backward: move to the next point and return True when
        one more pass is to run, False when the passes of this step are done."""
        return False

    @torch.no_grad()
    def prepare_update(self, grad_scale: float = 1.0, *, last_micro_batch: bool = True) -> bool:
        """After the last backward: restore the weights and leave the final direction in
        ``p.grad``, for :meth:`update` or ``GradScaler.step``.  ``grad_scale``: the factor
        the losses were scaled by (``scaler.get_scale()``), so that ``last_stats`` are in
        true units.  On a non-finite pass the gradients are filled with NaN (so that a
        ``GradScaler`` sees the overflow) and False is returned.

        With ``perturb="local"`` and micro-batches, each micro-batch runs its own passes and
        calls this with ``last_micro_batch=False`` but the last: the directions are summed
        and the sum is averaged over the processes after the last one."""
        s = self._step
        if s.phase is Phase.AT_W:
            self._between_full_steps(grad_scale)
        elif s.phase is self._last_pass:
            self._combine(grad_scale)
        elif s.phase in (Phase.READY, Phase.SKIPPED):
            raise RuntimeError(f"{type(self).__name__}.prepare_update() was called twice for "
                               "one step; take the step with update() or GradScaler.step()")
        elif s.phase is not Phase.FAILED:
            raise RuntimeError(f"{type(self).__name__}.prepare_update() at the wrong point "
                               f"({s.phase.value}); run the passes with ascend() first")
        if s.phase is Phase.FAILED:
            self._fail()  # again: a pass run after the failure left fresh gradients
            s.phase = Phase.SKIPPED
        self.last_stats = self._stats(grad_scale)
        if self.perturb == "local":
            self._gather_local(last_micro_batch, grad_scale)
        if last_micro_batch:
            self.cycle.steps_begun += 1
        return s.phase is Phase.READY

    # -- what subclasses define -----------------------------------------------------------
    #: the phase in which the last pass's gradient is in ``p.grad``
    _last_pass = Phase.AT_MAX

    def _holds_g0(self) -> bool:
        """Whether a full step keeps g0 out of ``p.grad`` for later use (BSAM's d,
        LookSAM's projection)."""
        return self.reuse == "look"

    def _combine(self, grad_scale: float) -> None:
        """The last pass's gradient is in ``p.grad``: leave the final direction there,
        weights at w, phase READY (or FAILED)."""
        raise NotImplementedError

    # -- helpers for subclasses -----------------------------------------------------------
    def _between_full_steps(self, grad_scale: float) -> None:
        """g0 is in ``p.grad``: keep it (plain step) or add LookSAM's held direction (held
        in true units, so the factor carries the loss scale)."""
        s = self._step
        if self.reuse == "look" and self.cycle.v:
            pairs = [[(p.grad, self.cycle.v[p]) for p in ps if p in self.cycle.v] for _, ps in s.groups]
            factor = self.reuse_alpha * s.norms["grad_norm"] / (self.cycle.v_norm + EPS)
            for group_pairs in filter(None, pairs):
                grads, held = zip(*group_pairs)
                torch._foreach_add_(list(grads), list(held), alpha=factor)
            s.extras["reuse_factor"] = factor / grad_scale
        s.phase = Phase.READY

    def _finish_full_step(self, direction: list[list[Tensor]], grad_scale: float) -> None:
        """The full step's direction is ready (in ``direction``, weights at w): under
        LookSAM keep its part orthogonal to g0 for the steps until the next full one."""
        s = self._step
        if self.reuse == "look":
            v = self.cycle.orthogonal_part(s.groups, direction, s.g0, s.norms["grad_norm"], grad_scale)
            if self.perturb == "local":  # averaged over micro-batches and processes at the end
                add_into(self._v_sum, list(v), list(v.values()))
            else:
                self.cycle.hold(v)
                # ||v|| / ||g0||: how large the held part is against its g0, the yardstick
                # for reuse_alpha (the reused steps add alpha * ||g0|| of it)
                s.extras["held_share"] = self.cycle.v_norm * grad_scale / (s.norms["grad_norm"] + EPS)
        s.g0 = []
        s.phase = Phase.READY

    def _gather_local(self, last_micro_batch: bool, grad_scale: float) -> None:
        """Local perturbation: add this micro-batch's direction to the step's sum; after the
        last, hand back the sum averaged over the processes (LookSAM's v in the same
        all-reduce, so every process holds the same v) and skip the step everywhere if any
        process or micro-batch was non-finite."""
        s = self._step
        for _, params in s.groups:
            add_into(self._direction_sum, params, detach_gradients(params, grads_of(params)))
        if not last_micro_batch:
            s.phase = Phase.IDLE
            return
        total, self._direction_sum = self._direction_sum, {}
        v_sum, self._v_sum = self._v_sum, {}
        for p, g in total.items():
            p.grad = g
        average_across_processes([*total.values(), *v_sum.values()])
        norm = global_norm([list(total.values())])
        self.last_stats["direction_norm"] = norm / grad_scale
        if v_sum:
            self.cycle.hold(v_sum)
        s.phase = Phase.READY if math.isfinite(norm) else Phase.SKIPPED

    def _perturbation_norm(self, grads: list[list[Tensor]]) -> float:
        """||g||, or ||w * g|| in adaptive mode (the norm ASAM divides by)."""
        s = self._step
        if not any(group["adaptive"] for group, _ in s.groups):
            return s.norms["grad_norm"]
        scaled = [
            torch._foreach_mul(torch._foreach_abs(ps), g) if group["adaptive"] else g
            for (group, ps), g in zip(s.groups, grads)
        ]
        return global_norm(scaled)

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

    def _restore(self) -> None:
        """Weights back to exactly w, if they were moved."""
        if self._step.moved:
            for _, params in self._step.groups:
                torch._foreach_copy_(params, self._buffers(params, "w"))

    def _give_back(self, held: list[list[Tensor]]) -> None:
        """Put held gradients back as the parameters' gradients."""
        for (_, params), grads in zip(self._step.groups, held):
            for p, g in zip(params, grads):
                p.grad = g

    def _fail(self) -> None:
        """Skip the step: weights back to w, gradients NaN for GradScaler."""
        s = self._step
        self._restore()
        if s.g1:
            self._give_back(s.g1)
        s.g0, s.g1 = [], []
        s.phase = Phase.FAILED
        for _, params in s.groups:
            torch._foreach_mul_(grads_of(params), float("nan"))

    def _buffers(self, params: list[Tensor], name: str) -> list[Tensor]:
        """Persistent parameter-sized scratch tensors, allocated once."""
        out = []
        for p in params:
            state = self.state[p]
            if name not in state:
                state[name] = torch.empty_like(p, memory_format=torch.preserve_format)
            out.append(state[name])
        return out

    def _stats(self, grad_scale: float) -> dict[str, float]:
        s = self._step
        stats = {key: value / grad_scale for key, value in s.norms.items()}
        stats.update(s.extras)
        stats["full_step"] = float(s.full)
        return stats

    def _warn_skip(self) -> None:
        stats = ", ".join(f"{k}={v:.3g}" for k, v in self.last_stats.items())
        warnings.warn(f"{type(self).__name__}: non-finite gradient, step skipped ({stats})",
                      RuntimeWarning, stacklevel=3)

    # -- state --------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """The base optimizer's state (its param groups carry rho, rho_min and the LR
        anchors of the rho_min schedule) and the step cycle (step count, LookSAM's held
        direction).  Scratch buffers are not saved."""
        state = self.base_optimizer.state_dict()
        state[Cycle.KEY] = self.cycle.state_dict(self._all_params())
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        state_dict = dict(state_dict)
        cycle = state_dict.pop(Cycle.KEY, None)
        self.base_optimizer.load_state_dict(state_dict)
        self.param_groups = self.base_optimizer.param_groups
        self.cycle = Cycle.from_state_dict(cycle, self._all_params())

    def _all_params(self) -> list[Tensor]:
        return [p for group in self.param_groups for p in group["params"]]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.base_optimizer!r})"


def run_step(optimizer: Optimizer, run_pass: Callable[[int], Tensor], scaler=None, *,
             micro_batches: int = 1, no_sync: Callable = contextlib.nullcontext) -> list[Tensor]:
    """One optimizer step of any optimizer: the passes its method needs, then the base step.

    ``run_pass(i)`` runs forward and backward of micro-batch ``i`` (of ``micro_batches``),
    adding to ``p.grad``, and returns its loss; with several micro-batches each loss is to be
    weighted by the micro-batch's share of the step's batch, and with a ``scaler`` scaled by
    it.  A pass zeroes the gradients and sweeps every micro-batch, so the step equals one
    step on the whole batch; under ``perturb="local"`` each micro-batch runs its own passes
    instead.  ``no_sync``: a context in which a backward does not synchronise gradients
    (DDP's ``model.no_sync``); every backward but a pass's last runs in it (under local
    perturbation, every backward).  SGD/Adam run one pass, SAM two, BSAM three (a step
    between full ones: one); the perturbed passes keep batch-norm running statistics still.
    Returns the losses of the first pass, one per micro-batch.
    """
    sharpness_aware = isinstance(optimizer, SharpnessAwareOptimizer)
    local = sharpness_aware and optimizer.perturb == "local"
    rounds = [[i] for i in range(micro_batches)] if local else [list(range(micro_batches))]
    scale = scaler.get_scale() if scaler is not None else 1.0
    losses, ready = [], True
    for r, micro in enumerate(rounds):
        def one_pass(micro=micro):
            return _sweep(optimizer, run_pass, micro, no_sync, sync_last=not local)
        losses += one_pass()
        if sharpness_aware:
            if optimizer.ascend():
                with frozen_bn_stats(optimizer.model):
                    one_pass()
                    while optimizer.advance():
                        one_pass()
            ready = optimizer.prepare_update(grad_scale=scale, last_micro_batch=r == len(rounds) - 1)
    if scaler is not None:  # the scaler unscales before step(), so clipping sees unscaled values
        scaler.step(optimizer)
        scaler.update()
    elif ready:  # gradients first: TRAIN.CLIP_GRAD_NORM clips them when step() begins
        optimizer.step()
    else:
        optimizer._warn_skip()
    return losses


def _sweep(optimizer, run_pass, micro: list[int], no_sync, sync_last: bool) -> list[Tensor]:
    """One pass: gradients zeroed, then summed over ``micro``; only the last backward
    synchronises across processes, and only when ``sync_last``."""
    optimizer.zero_grad(set_to_none=True)
    losses = []
    for j, i in enumerate(micro):
        synced = sync_last and j == len(micro) - 1
        with contextlib.nullcontext() if synced else no_sync():
            losses.append(run_pass(i))
    return losses


def _check_cheap_steps(interval, reuse, reuse_alpha) -> None:
    if isinstance(interval, bool) or not isinstance(interval, int) or interval < 1:
        raise ValueError(f"interval must be an integer >= 1 (1: every step is a full step), got {interval!r}")
    if reuse not in REUSE_RULES:
        raise ValueError(f"reuse must be one of {', '.join(REUSE_RULES)}, got {reuse!r}")
    if not reuse_alpha >= 0:
        raise ValueError(f"reuse_alpha must be >= 0, got {reuse_alpha!r}")
