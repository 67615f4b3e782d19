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
    #: optimizer steps so far (counted as each is prepared); step ``t`` is full when
    #: ``t % interval == 0``
    steps_begun: int = 0
    #: LookSAM's v per parameter: the last full direction's part orthogonal to its g0,
    #: in the gradients' true units (divided by the loss scale)
    v: dict[Tensor, Tensor] = field(default_factory=dict)
    #: ||v||, over every parameter
    v_norm: float = 0.0

    #: the key of the cycle in the optimizer's state_dict
    KEY = "sharpness_aware_cycle"

    def is_full(self, interval: int) -> bool:
        """Whether the step now beginning is a full one."""
        return self.steps_begun % interval == 0

    @staticmethod
    @torch.no_grad()
    def orthogonal_part(groups, direction: list[list[Tensor]], g0: list[list[Tensor]],
                        g0_norm: float, grad_scale: float) -> dict[Tensor, Tensor]:
        """v = D - (<D, g0> / (||g0||^2 + eps)) g0 for the direction D of a full step, per
        parameter, divided by the loss scale."""
        coefficient = global_dot(direction, g0) / (g0_norm ** 2 + 1e-12)
        v: dict[Tensor, Tensor] = {}
        for (_, params), d, g in zip(groups, direction, g0):
            part = torch._foreach_add(d, g, alpha=-coefficient)
            if grad_scale != 1.0:
                torch._foreach_div_(part, grad_scale)
            v.update(zip(params, part))
        return v

    def hold(self, v: dict[Tensor, Tensor]) -> None:
        """Keep ``v`` until the next full step."""
        self.v = v
        self.v_norm = global_norm([list(v.values())])

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
