"""Training throughput of SGD, SAM and BSAM on the same model and data, side by side.

One epoch (capped by --iters) per method through the shared trainer, in one process, in
turn; prints images/s and the ratio to SGD.  Two passes make SAM's ideal ratio 1/2 and
three make BSAM's 1/3; what is above that is optimizer overhead and data loading.

    python benchmarks/train_throughput.py [--cfg configs/demo/cls_cifar10_subset_tiny.yaml]
        [--iters 20] [--opts KEY VALUE ...]
"""
from __future__ import annotations

import argparse
import tempfile
import time

from tasks.engine import config
from tasks.engine.trainer import Trainer


def measure(cfg_path: str, method: str, iters: int, opts: list[str], out: str) -> float:
    cfg = config.load(cfg_path, [*opts, "SAM.METHOD", method, "OUTPUT_DIR", out,
                                 "NAME", f"throughput_{method}",
                                 "TRAIN.MAX_ITERS_PER_EPOCH", str(iters)])
    trainer = Trainer(cfg)
    trainer.train_epoch(0)  # warm-up: allocations, first-touch of the data
    start = time.perf_counter()
    trainer.train_epoch(1)
    seconds = time.perf_counter() - start
    return trainer.iters_per_epoch * cfg.TRAIN.BATCH_SIZE_PER_GPU / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cfg", default="configs/demo/cls_cifar10_subset_tiny.yaml")
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--opts", nargs="*", default=[])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as out:
        rates = {m: measure(args.cfg, m, args.iters, args.opts, out) for m in ("none", "sam", "bsam")}
    print(f"\n{args.cfg}, {args.iters} iterations per method\n")
    print("| method | images/s | vs SGD | ideal |")
    print("|---|---:|---:|---:|")
    for method, ideal in (("none", 1.0), ("sam", 1 / 2), ("bsam", 1 / 3)):
        name = "SGD (none)" if method == "none" else method.upper()
        print(f"| {name} | {rates[method]:.1f} | {rates[method] / rates['none']:.3f} | {ideal:.3f} |")


if __name__ == "__main__":
    main()
