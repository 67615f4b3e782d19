"""Training throughput of SGD, SAM and BSAM on the same model and data, side by side,
with the cheaper steps (SAM.INTERVAL k, every-k and LookSAM reuse) at k = 2, 5, 10.

Each variant gets its own trainer (one process) and a warm-up of 10 iterations; then the
variants take turns for ``--rounds`` timed epochs of ``--iters`` iterations each, the order
turning every round so that no variant always runs first.  Images/s is each variant's best
round; the ratio to SGD is the median over rounds of the ratio within a round (both timed
moments apart, under the same load).  ``--clock cpu`` (the default) times the process's CPU time, which a
neighbour's load on a shared machine barely changes (run with OMP_NUM_THREADS=1); ``wall``
times wall-clock seconds, for a machine of one's own or a GPU.  Prints images/s,
the ratio to SGD and the ideal ratio 1 / (1 + (passes - 1) / k): two passes make SAM's ideal
1/2 and three make BSAM's 1/3; what is above that is optimizer overhead and data loading.
Keep ``--iters`` a multiple of 10 so that every k sees the same share of full steps.

    python benchmarks/train_throughput.py [--cfg configs/demo/cls_cifar10_subset_tiny.yaml]
        [--iters 20] [--rounds 5] [--intervals 2 5 10] [--clock cpu|wall] [--opts KEY VALUE ...]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import dataclass

import torch

from tasks.engine import config
from tasks.engine.trainer import Trainer

PASSES = {"none": 1, "sam": 2, "bsam": 3}
CLOCKS = {"cpu": time.process_time, "wall": time.perf_counter}
WARMUP_ITERS = 10  # a multiple of every k: the timed epochs start at a full step


@dataclass(frozen=True)
class Variant:
    method: str
    interval: int = 1
    reuse: str = "none"

    @property
    def name(self) -> str:
        base = "SGD (none)" if self.method == "none" else self.method.upper()
        if self.interval == 1:
            return base
        return f"{base} {'look' if self.reuse == 'look' else 'every-k'} k={self.interval}"

    @property
    def ideal(self) -> float:
        return 1 / (1 + (PASSES[self.method] - 1) / self.interval)

    def opts(self) -> list[str]:
        return ["SAM.METHOD", self.method, "SAM.INTERVAL", str(self.interval),
                "SAM.REUSE", self.reuse, "NAME",
                f"throughput_{self.method}_{self.interval}_{self.reuse}"]


def variants(intervals: list[int]) -> list[Variant]:
    out = [Variant("none"), Variant("sam"), Variant("bsam")]
    for method in ("sam", "bsam"):
        out += [Variant(method, k, reuse) for k in intervals for reuse in ("none", "look")]
    return out


def epoch_rate(trainer: Trainer, epoch: int, clock) -> float:
    start = clock()
    trainer.train_epoch(epoch)
    seconds = clock() - start
    return trainer.iters_per_epoch * trainer.cfg.TRAIN.BATCH_SIZE_PER_GPU / seconds


def warm_up(trainer: Trainer) -> None:
    """A short first epoch: allocations, first touch of the data, the first full step."""
    iters, trainer.iters_per_epoch = trainer.iters_per_epoch, WARMUP_ITERS
    trainer.train_epoch(0)
    trainer.iters_per_epoch = iters


def measure(cfg_path: str, chosen: list[Variant], iters: int, rounds: int, opts: list[str],
            out: str, clock) -> dict[Variant, list[float]]:
    """Images per second of every variant in every round."""
    trainers = {}
    for v in chosen:
        cfg = config.load(cfg_path, [*opts, *v.opts(), "OUTPUT_DIR", out,
                                     "TRAIN.MAX_ITERS_PER_EPOCH", str(iters)])
        trainers[v] = Trainer(cfg)
        warm_up(trainers[v])
    rates = {v: [] for v in chosen}
    for epoch in range(1, rounds + 1):
        turn = (epoch - 1) % len(chosen)
        for v in chosen[turn:] + chosen[:turn]:
            rates[v].append(epoch_rate(trainers[v], epoch, clock))
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cfg", default="configs/demo/cls_cifar10_subset_tiny.yaml")
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5, help="timed epochs per variant")
    parser.add_argument("--intervals", type=int, nargs="*", default=[2, 5, 10],
                        help="SAM.INTERVAL values of the cheaper rows (none: only SGD, SAM, BSAM)")
    parser.add_argument("--clock", choices=list(CLOCKS), default="cpu",
                        help="cpu: the process's CPU time (robust on a shared machine); wall: seconds")
    parser.add_argument("--opts", nargs="*", default=[])
    args = parser.parse_args()
    chosen = variants(args.intervals)
    with tempfile.TemporaryDirectory() as out:
        rates = measure(args.cfg, chosen, args.iters, args.rounds, args.opts, out, CLOCKS[args.clock])
    sgd = rates[chosen[0]]
    print(f"\n{args.cfg}, {args.iters} iterations per epoch, {args.rounds} rounds, "
          f"{args.clock} time, {torch.get_num_threads()} thread(s)\n")
    print(f"| method | passes / step | images / {args.clock} s (best) | vs SGD (median) | ideal | vs ideal |")
    print("|---|---:|---:|---:|---:|---:|")
    for v in chosen:
        ratio = statistics.median(r / s for r, s in zip(rates[v], sgd))
        print(f"| {v.name} | {1 / v.ideal:.2f} | {max(rates[v]):.1f} | {ratio:.3f} | {v.ideal:.3f} "
              f"| {ratio / v.ideal:.2f} |")

if __name__ == "__main__":
    main()
