"""What a sharpness-aware optimizer keeps from one step to the next: how many steps it has
begun (which of them are full, for ``interval``) and LookSAM's held direction v.

Both are saved in the optimizer's ``state_dict``, so a run resumed between two full steps
continues exactly where it stopped.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from .tensors import global_dot, global_norm

#: what the steps between two full ones hand the base optimizer: ``none`` g0, ``look``
#: LookSAM's g0 + alpha * (||g0|| / ||v||) * v
REUSE_RULES = ("none", "look")


@dataclass
class Cycle:
    #: steps begun so far; step ``t`` is full when ``t % interval == 0``
    steps_begun: int = 0
    #: LookSAM's v per parameter: the last full direction's part orthogonal to its g0,
    #: in the gradients' true units (divided by the loss scale)
    v: dict[Tensor, Tensor] = field(default_factory=dict)
    #: ||v||, over every parameter
    v_norm: float = 0.0

    #: the key of the cycle in the optimizer's state_dict
    KEY = "sharpness_aware_cycle"

    def begin_step(self, interval: int) -> bool:
        """Count a new step; whether it is a full one."""
        full = self.steps_begun % interval == 0
        self.steps_begun += 1
        return full

    @torch.no_grad()
    def hold_orthogonal(self, groups, direction: list[list[Tensor]], g0: list[list[Tensor]],
                        g0_norm: float, grad_scale: float) -> None:
        """v = D - (<D, g0> / (||g0||^2 + eps)) g0, for the direction D of a full step."""
        coefficient = global_dot(direction, g0) / (g0_norm ** 2 + 1e-12)
        held: dict[Tensor, Tensor] = {}
        for (_, params), d, g in zip(groups, direction, g0):
            v = [self.v.get(p) if self.v.get(p) is not None else torch.empty_like(p) for p in params]
            torch._foreach_copy_(v, d)
            torch._foreach_add_(v, g, alpha=-coefficient)
            if grad_scale != 1.0:
                torch._foreach_div_(v, grad_scale)
            held.update(zip(params, v))
        self.v = held
        self.v_norm = global_norm([list(held.values())])

    def state_dict(self, params: list[Tensor]) -> dict:
        index = {p: i for i, p in enumerate(params)}
        return {"steps_begun": self.steps_begun, "v_norm": self.v_norm,
                "v": {index[p]: v for p, v in self.v.items()}}

    @classmethod
    def from_state_dict(cls, state: dict | None, params: list[Tensor]) -> "Cycle":
        """``None`` (a checkpoint saved before cycles existed): a fresh cycle."""
        if state is None:
            return cls()
        v = {params[i]: t.to(device=params[i].device, dtype=params[i].dtype).clone()
             for i, t in state["v"].items()}
        return cls(int(state["steps_begun"]), v, float(state["v_norm"]))
