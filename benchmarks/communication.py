"""Communication per optimizer step of SGD, SAM and BSAM under DDP, with the perturbation
global (every pass all-reduces) or local (SAM.PERTURB local: one all-reduce of the final
direction), counted in a 2-process run: all-reduce calls and bytes of one step (DDP's
gradient buckets through a comm hook, plus the optimizer's own all-reduce), and the median
step time.  gloo on the CPU by default; ``--backend nccl`` on two CUDA GPUs.

    python benchmarks/communication.py [--backend gloo|nccl] [--steps 5] [--batch 32]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel as DDP

import optim
from tasks.classification.models import he_cifar_resnet
from tasks.engine.collectives import CollectiveCounter

VARIANTS = [("none", "global"), ("sam", "global"), ("sam", "local"), ("bsam", "global"),
            ("bsam", "local")]


def one_variant(method: str, perturb: str, rank: int, device, args) -> tuple[int, int, float]:
    torch.manual_seed(0)
    net = he_cifar_resnet(20, 10).to(device)
    model = DDP(net, device_ids=[device.index] if device.type == "cuda" else None)
    opt = optim.build(model.parameters(), "sgd", lr=0.05, method=method, model=model,
                      **({"perturb": perturb} if method != "none" else {}))
    counter = CollectiveCounter()
    counter.watch(model)
    g = torch.Generator().manual_seed(rank)
    x = torch.randn(args.batch, 3, 32, 32, generator=g).to(device)
    y = torch.randint(0, 10, (args.batch,), generator=g).to(device)

    def run_pass(_):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        return loss

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times = []
    for step in range(args.steps + 1):  # the first step builds DDP's buckets: not counted
        counter.calls = counter.bytes = 0
        sync()
        start = time.perf_counter()
        with counter.python_all_reduces():
            optim.run_step(opt, run_pass, no_sync=model.no_sync)
        sync()
        if step:
            times.append(time.perf_counter() - start)
    return counter.calls, counter.bytes, statistics.median(times)


def worker(rank: int, world: int, init_file: str, out_file: str, args) -> None:
    dist.init_process_group(args.backend, init_method=f"file://{init_file}", rank=rank,
                            world_size=world)
    try:
        torch.set_num_threads(1)
        device = torch.device("cuda", rank) if args.backend == "nccl" else torch.device("cpu")
        rows = {f"{m} {p}": one_variant(m, p, rank, device, args) for m, p in VARIANTS}
        if rank == 0:
            torch.save(rows, out_file)
        dist.barrier()
    finally:
        dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["gloo", "nccl"], default="gloo")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per variant (median)")
    parser.add_argument("--batch", type=int, default=32, help="images per process")
    args = parser.parse_args()
    if args.backend == "nccl" and torch.cuda.device_count() < 2:
        raise SystemExit("error: --backend nccl needs two CUDA GPUs; use --backend gloo")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "rows.pt"
        mp.spawn(worker, args=(2, str(Path(tmp) / "init"), str(out), args), nprocs=2, join=True)
        rows = torch.load(out, weights_only=True)
    params = sum(p.numel() for p in he_cifar_resnet(20, 10).parameters())
    print(f"\nCIFAR ResNet-20 ({params} parameters, {4 * params / 1e6:.2f} MB of fp32 gradients), "
          f"2 processes, {args.backend}, batch {args.batch} per process, median of {args.steps} steps\n")
    print("| method | perturbation | all-reduce calls / step | MB / step | step time (ms) | vs global |")
    print("|---|---|---:|---:|---:|---:|")
    for method, perturb in VARIANTS:
        calls, nbytes, seconds = rows[f"{method} {perturb}"]
        same_global = rows[f"{method} global"][2]
        name = "SGD (none)" if method == "none" else method.upper()
        print(f"| {name} | {perturb if method != 'none' else '-'} | {calls} | {nbytes / 1e6:.2f} | "
              f"{1e3 * seconds:.0f} | {seconds / same_global:.2f}x |")


if __name__ == "__main__":
    main()
