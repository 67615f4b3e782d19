"""Optimizer-side cost of one step: everything except the forward-backward passes.

For the parameter sets of torchvision ResNet-18 and ResNet-50, gradients are planted in
``p.grad`` as a backward pass would leave them, and only the optimizer calls are timed:
this suite's BSAM and SAM, and a straightforward per-parameter-loop BSAM (the formula
written the way one usually first writes it, with three saved copies per parameter).
All use the same base optimizer (SGD, momentum 0.9).  Also prints the persistent extra
state each wrapper keeps, in bytes per parameter byte.

    python benchmarks/optim_overhead.py [--steps 20] [--models resnet18 resnet50] [--devices cpu cuda]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torchvision

import optim

EPS = 1e-12


class LoopBSAM:
    """BSAM with a Python loop over parameters and fresh temporaries, as a baseline."""

    def __init__(self, params, rho=0.05, rho_min=0.05, **sgd):
        self.params = list(params)
        self.base = torch.optim.SGD(self.params, **sgd)
        self.rho, self.rho_min = rho, rho_min
        self.state = {p: {} for p in self.params}

    @staticmethod
    def _norm(tensors):
        return torch.norm(torch.stack([t.norm(2) for t in tensors]), 2)

    @torch.no_grad()
    def ascend(self):
        self.n0 = self._norm([p.grad for p in self.params])
        for p in self.params:
            s = self.state[p]
            s["old_p"] = p.data.clone()
            s["g0"] = p.grad.clone()
            p.add_(self.rho * p.grad / (self.n0 + EPS))

    @torch.no_grad()
    def descend_to_min(self):
        self.n1 = self._norm([p.grad for p in self.params])
        for p in self.params:
            s = self.state[p]
            s["g1"] = p.grad.clone()
            p.data.copy_(s["old_p"])
            p.sub_(self.rho_min * s["g0"] / (self.n0 + EPS))

    @torch.no_grad()
    def update(self):
        n2 = self._norm([p.grad for p in self.params])
        for p in self.params:
            s = self.state[p]
            p.grad = s["g1"] + s["g0"] - (self.n1 / n2) * p.grad
            p.data.copy_(s["old_p"])
        self.base.step()

    def extra_state_bytes(self):
        return sum(t.numel() * t.element_size() for s in self.state.values() for t in s.values())


def suite_extra_state_bytes(opt) -> int:
    return sum(t.numel() * t.element_size() for s in opt.state.values() for t in s.values()
               if torch.is_tensor(t))


def plant(params, grads):
    for p, g in zip(params, grads):
        p.grad = g.clone() if g is not None else None


def time_steps(kind: str, params, grads3, steps: int, device) -> tuple[float, float]:
    """Median optimizer-side seconds per step and extra state bytes per parameter byte."""
    sgd = dict(lr=1e-3, momentum=0.9, weight_decay=1e-4)
    if kind == "loop BSAM":
        opt = LoopBSAM(params, **sgd)
        phases = [opt.ascend, opt.descend_to_min, opt.update]
    elif kind == "BSAM":
        opt = optim.BSAM(params, torch.optim.SGD, **sgd)
        phases = [opt.ascend, opt.descend_to_min, opt.update]
    else:
        opt = optim.SAM(params, torch.optim.SGD, **sgd)
        phases = [opt.ascend, opt.update]
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times = []
    for step in range(steps + 2):
        spent = 0.0
        for phase, grads in zip(phases, grads3):
            plant(params, grads)  # what a backward pass would leave behind (not timed)
            sync()
            start = time.perf_counter()
            phase()
            sync()
            spent += time.perf_counter() - start
        if step >= 2:  # two warm-up steps allocate the buffers
            times.append(spent)
    extra = opt.extra_state_bytes() if kind == "loop BSAM" else suite_extra_state_bytes(opt)
    param_bytes = sum(p.numel() * p.element_size() for p in params)
    return statistics.median(times), extra / param_bytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--models", nargs="+", default=["resnet18", "resnet50"])
    parser.add_argument("--devices", nargs="+", default=["cpu", "cuda"], choices=["cpu", "cuda"],
                        help="cuda rows print only when a GPU is present")
    args = parser.parse_args()
    devices = [torch.device(d) for d in args.devices if d == "cpu" or torch.cuda.is_available()]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads; "
          f"median of {args.steps} steps; optimizer-side time only (no forward/backward)\n")
    print(f"| model | device | optimizer | ms / step | vs loop BSAM | extra state / param bytes |")
    print(f"|---|---|---|---:|---:|---:|")
    for device in devices:
        for name in args.models:
            model = getattr(torchvision.models, name)().to(device)
            params = [p for p in model.parameters()]
            g = torch.Generator(device=device).manual_seed(0)
            grads3 = [[torch.randn(p.shape, generator=g, device=device) * 1e-2 for p in params]
                      for _ in range(3)]
            rows = {}
            for kind in ("loop BSAM", "BSAM", "SAM"):
                fresh = [p.detach().clone().requires_grad_(True) for p in params]
                rows[kind] = time_steps(kind, fresh, grads3, args.steps, device)
            base = rows["loop BSAM"][0]
            for kind, (seconds, extra) in rows.items():
                print(f"| {name} | {device.type} | {kind} | {seconds * 1e3:.1f} | "
                      f"{seconds / base:.2f}x | {extra:.2f} |")


if __name__ == "__main__":
    main()
