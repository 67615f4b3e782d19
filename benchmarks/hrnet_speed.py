"""Training-step time per image of HRNet-W32 256x192 on the CPU: this suite's ``pose_hrnet``
against HRNet's own implementation on identical weights and input, and SimpleBaseline
ResNet-50 (``pose_resnet``) beside them, in one markdown table.

HRNet's code is not part of this project: pass a checkout of
https://github.com/leoxiaobin/deep-high-resolution-net.pytorch (only its
``lib/models/pose_hrnet.py`` and ``experiments/coco/hrnet/w32_256x192_adam_lr1e-3.yaml``
are read).  A step is forward + backward of the heatmap MSE in training mode; the models
take turns each iteration so that a busy machine slows them alike, and the table gives the
median and the fastest iteration.  The ratio to HRNet's code is the median of the per-iteration
ratios with a 95% bootstrap interval: both models run the same kernels, so the question is
whether the interval leaves 1.0.  ``--clock cpu`` (the default) times the thread's CPU time,
which a neighbour's load changes far less than wall-clock seconds (``--clock wall``).

    python benchmarks/hrnet_speed.py --reference /path/to/deep-high-resolution-net.pytorch \\
        [--iters 40] [--batch 1] [--threads 1] [--clock cpu|wall]
"""
from __future__ import annotations

import argparse
import importlib.util
import random
import statistics
import time
from pathlib import Path

import torch

from tasks.engine.config import load, parse_yaml
from tasks.pose.task import PoseTask

REPO = Path(__file__).resolve().parents[1]

REFERENCE_MODEL = "lib/models/pose_hrnet.py"
REFERENCE_CFG = "experiments/coco/hrnet/w32_256x192_adam_lr1e-3.yaml"


def reference_hrnet(checkout: Path) -> torch.nn.Module:
    """HRNet's PoseHighResolutionNet built from its own W32 experiment file."""
    for part in (REFERENCE_MODEL, REFERENCE_CFG):
        if not (checkout / part).is_file():
            raise SystemExit(f"error: --reference {checkout}: no {part}; pass a checkout of "
                             "leoxiaobin/deep-high-resolution-net.pytorch")
    spec = importlib.util.spec_from_file_location("reference_pose_hrnet", checkout / REFERENCE_MODEL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.PoseHighResolutionNet(parse_yaml((checkout / REFERENCE_CFG).read_text()))


def suite_model(config: str) -> torch.nn.Module:
    return PoseTask(load(REPO / "configs" / config, ["MODEL.PRETRAINED", ""])).build_model()


CLOCKS = {"cpu": time.thread_time, "wall": time.perf_counter}
BOOTSTRAP_SAMPLES = 2000


def step(model: torch.nn.Module, x: torch.Tensor, clock=time.thread_time) -> float:
    """Seconds of one forward + backward (gradients dropped afterwards)."""
    start = clock()
    model(x).square().mean().backward()
    elapsed = clock() - start
    model.zero_grad(set_to_none=True)
    return elapsed


def measure(models: dict, x: torch.Tensor, iters: int, clock) -> dict[str, list[float]]:
    for model in models.values():
        model.train()
        step(model, x, clock)  # warm-up: first-call allocations
    times = {name: [] for name in models}
    names = list(models)
    for i in range(iters):  # the order turns each iteration: no model always runs first
        for name in names[i % len(names):] + names[:i % len(names)]:
            times[name].append(step(models[name], x, clock) / x.shape[0])
    return times


def median_interval(ratios: list[float]) -> tuple[float, float, float]:
    """The median of ``ratios`` and a 95% bootstrap interval of it (fixed seed)."""
    rng = random.Random(0)
    medians = sorted(statistics.median(rng.choices(ratios, k=len(ratios))) for _ in range(BOOTSTRAP_SAMPLES))
    return statistics.median(ratios), medians[int(0.025 * BOOTSTRAP_SAMPLES)], medians[int(0.975 * BOOTSTRAP_SAMPLES) - 1]


def table(models: dict, times: dict, reference: str) -> str:
    """One row per model; the time relative to HRNet's code is the median over iterations of
    the ratio within each iteration (both ran moments apart, under the same load)."""
    lines = ["| model | parameters | ms per image (median) | fastest | vs HRNet's code (median) | 95% interval |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, model in models.items():
        params = sum(p.numel() for p in model.parameters()) / 1e6
        ratio, low, high = median_interval([t / r for t, r in zip(times[name], times[reference])])
        lines.append(f"| {name} | {params:.1f} M | {statistics.median(times[name]) * 1e3:.0f} | "
                     f"{min(times[name]) * 1e3:.0f} | {ratio:.3f}x | {low:.3f}-{high:.3f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", type=Path, required=True, help="checkout of deep-high-resolution-net.pytorch")
    parser.add_argument("--iters", type=int, default=40)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--clock", choices=list(CLOCKS), default="cpu",
                        help="cpu: the thread's CPU time (robust on a shared machine); wall: seconds")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    ours = suite_model("pose_hrnet_w32_adam.yaml")
    reference = reference_hrnet(args.reference)
    reference.load_state_dict(ours.state_dict())  # identical weights (the layouts are the same)
    models = {"HRNet-W32, HRNet's code": reference, "HRNet-W32, pose_hrnet (this suite)": ours,
              "SimpleBaseline ResNet-50, pose_resnet": suite_model("pose_adam.yaml")}
    x = torch.randn(args.batch, 3, 256, 192, generator=torch.Generator().manual_seed(0))
    times = measure(models, x, args.iters, CLOCKS[args.clock])
    print(f"CPU, {args.threads} thread(s), batch {args.batch} at 256x192, forward + backward, "
          f"{args.iters} iterations after one warm-up, {args.clock} time (torch {torch.__version__})\n")
    print(table(models, times, "HRNet-W32, HRNet's code"))


if __name__ == "__main__":
    main()
