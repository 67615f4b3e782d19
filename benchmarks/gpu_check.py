"""The one command to run when a CUDA GPU is at hand: checks the CUDA/NCCL path and measures
throughput, in about 8 minutes, with nothing but this repository and its environment (the
data are generated or synthetic tensors; nothing is downloaded).

    python benchmarks/gpu_check.py [--budget 480] [--iters 20]
    python benchmarks/gpu_check.py --quick     # part 2 alone on the least data (make test runs it)

1. ``pytest -m cuda``: the CUDA tests (fp16 + GradScaler, channels_last, compile, ...);
2. ``torchrun --nproc_per_node 1`` trainings of a tiny pose config on generated data (NCCL on
   a GPU): all-reduce, gather, sharded COCO evaluation, a SIGTERM stop and ``--resume``,
   whose final weights must equal an uninterrupted run's;
3. the CUDA rows of ``benchmarks/optim_overhead.py`` and, on two GPUs, the NCCL rows of
   ``benchmarks/communication.py`` (all-reduces per step of SGD/SAM/BSAM, global and local);
4. images/s of SGD, SAM and BSAM for CIFAR ResNet-18 (batch 128, 32x32) and SimpleBaseline
   ResNet-50 (batch 32, 256x192) on synthetic tensors: fp32, bf16, bf16 + channels_last and
   bf16 + channels_last + torch.compile.

Prints one table; exits 1 when a check fails.  Without a GPU, parts 1 and 2 run on the CPU
(the CUDA tests then skip, the trainings use gloo) and parts 3 and 4 are reported as skipped.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tasks.engine.cli import STOPPED  # noqa: E402

rows: list[tuple[str, str, str, str]] = []  # part, item, status, detail


def report(part: str, item: str, status: str, detail: str = "") -> None:
    rows.append((part, item, status, detail))
    print(f"[{status}] {part}: {item} {detail}", flush=True)


def run(args: list, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *map(str, args)], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})})


def cuda_tests() -> None:
    started = time.perf_counter()
    proc = run(["-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider"], timeout=240)
    summary = (proc.stdout.strip().splitlines() or ["no output"])[-1]
    ok = proc.returncode == 0 and "skipped" not in summary
    status = "pass" if ok else "skipped" if proc.returncode == 0 else "FAIL"
    report("pytest -m cuda", "CUDA-marked tests", status, f"{summary} ({time.perf_counter() - started:.0f} s)")
    if status == "FAIL":
        print(proc.stdout[-3000:], proc.stderr[-2000:])


#: The generated pose data and training length of part 2: the check's, and ``--quick``'s
#: (the CPU part in seconds, for the test that keeps this script working).
TRAINING = {"full": dict(images=24, val_images=8, iters=3, stop_step=5, threads=2),
            "quick": dict(images=8, val_images=4, iters=2, stop_step=3, threads=1)}


def torchrun_training(out: Path, size: dict) -> None:
    """One process under torchrun: a process group at world size 1 (NCCL on a GPU).  The
    tests' worker (tests/engine/distributed_worker.py) delivers the SIGTERM."""
    worker = REPO / "tests" / "engine" / "distributed_worker.py"
    opts = ["OUTPUT_DIR", out, "DATASET.ROOT", out / "pose_data", "DATASET.SYNTHETIC_IMAGES", size["images"],
            "DATASET.SYNTHETIC_VAL_IMAGES", size["val_images"], "TRAIN.END_EPOCH", 2,
            "TRAIN.MAX_ITERS_PER_EPOCH", size["iters"], "TEST.NUM_DRAW", 0, "DETERMINISTIC", "true",
            "WORKERS", 0, "AMP", "none"]
    env = {"RECORD_DIR": str(out), "CUBLAS_WORKSPACE_CONFIG": ":4096:8", "OMP_NUM_THREADS": str(size["threads"])}

    demo_cfg = REPO / "configs" / "demo" / "pose_bsam_demo.yaml"
    made = run(["-m", "tasks.pose.synthetic", "--cfg", demo_cfg, "--opts", *opts])  # runs only check it
    if made.returncode != 0:
        raise RuntimeError(f"synthetic data failed:\n{made.stderr[-2000:]}")

    def train(name: str, *extra, stop: bool = False):
        started = time.perf_counter()
        stop_env = {"STOP_RANK": "0", "STOP_STEP": str(size["stop_step"])} if stop else {}
        proc = run(["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", 1, worker,
                    "--cfg", demo_cfg, *extra, "--opts", "NAME", name, *opts],
                   env={**env, **stop_env}, timeout=300)
        if not torchrun_ended_as(proc, STOPPED if stop else 0):
            raise RuntimeError(f"{name} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
        return time.perf_counter() - started

    item = "train 2 epochs: all-reduce, gather, sharded eval"
    try:
        seconds = train("full")
        log = (out / "pose" / "full" / "train.log").read_text()
        world = "world 1" in log and "val_AP=" in log
        report("torchrun x1", item, "pass" if world else "FAIL", f"{_device_line(log)} ({seconds:.0f} s)")
        item = f"SIGTERM at step {size['stop_step']}, --resume vs uninterrupted"
        train("stopped", stop=True)
        train("stopped", "--resume")
        full = torch.load(out / "pose" / "full" / "checkpoint_last.pth", weights_only=True)["model"]
        resumed = torch.load(out / "pose" / "stopped" / "checkpoint_last.pth", weights_only=True)["model"]
        diff = max((full[k].double() - resumed[k].double()).abs().max().item() for k in full)
        report("torchrun x1", item, "pass" if diff == 0.0 else "FAIL", f"max abs weight difference {diff:.3g}")
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as err:
        report("torchrun x1", item, "FAIL", str(err).splitlines()[0])
        print(err)


def torchrun_ended_as(proc: subprocess.CompletedProcess, code: int) -> bool:
    """Whether every rank of a torchrun exited with ``code``: torchrun itself exits 0 only
    when all did, and reports any other status as a failure naming each rank's exit code
    (a run stopped by SIGTERM exits :data:`STOPPED`, by design)."""
    if code == 0:
        return proc.returncode == 0
    codes = re.findall(r"exitcode\s*:\s*(-?\d+)", proc.stderr)
    return proc.returncode != 0 and set(codes) == {str(code)}


def _device_line(log: str) -> str:
    for line in log.splitlines():
        if "device " in line and "world" in line:
            return line.split(", device ", 1)[-1]
    return "?"


def optimizer_overhead(steps: int) -> None:
    proc = run(["benchmarks/optim_overhead.py", "--devices", "cuda", "--steps", steps], timeout=180)
    if proc.returncode != 0:
        report("optim_overhead", "CUDA rows", "FAIL", proc.stderr.strip().splitlines()[-1])
        return
    for line in proc.stdout.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 6 and cells[1] == "cuda":
            report("optim_overhead", f"{cells[0]} {cells[2]}", "measured", f"{cells[3]} ms/step, {cells[4]}")


def communication() -> None:
    """benchmarks/communication.py over NCCL (two GPUs): all-reduces per step, global vs local."""
    if torch.cuda.device_count() < 2:
        report("communication", "NCCL rows", "skipped", "(needs two CUDA GPUs)")
        return
    proc = run(["benchmarks/communication.py", "--backend", "nccl"], timeout=180)
    if proc.returncode != 0:
        report("communication", "NCCL rows", "FAIL", proc.stderr.strip().splitlines()[-1])
        return
    for line in proc.stdout.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 6 and cells[2].isdigit():
            report("communication", f"{cells[0]} {cells[1]}", "measured",
                   f"{cells[2]} all-reduces, {cells[3]} MB, {cells[4]} ms/step")


def synthetic_workload(name: str, device: torch.device):
    """(model, inputs, loss_fn, batch) on synthetic tensors."""
    import torch.nn.functional as F

    g = torch.Generator(device="cpu").manual_seed(0)
    if name == "cifar_resnet18 b128":
        from tasks.classification.models import build_classifier

        model = build_classifier("cifar_resnet18", 10)
        x, y = torch.randn(128, 3, 32, 32, generator=g), torch.randint(0, 10, (128,), generator=g)
        return model.to(device), x.to(device), lambda out: F.cross_entropy(out.float(), y.to(device)), 128
    from tasks.engine.config import make_config
    from tasks.pose.loss import joints_mse_loss
    from tasks.pose.task import PoseTask

    model = PoseTask(make_config({"MODEL": {"EXTRA": {"NUM_LAYERS": 50}}}, task="pose")).build_model()
    x = torch.randn(32, 3, 256, 192, generator=g)
    target, weight = torch.rand(32, 17, 64, 48, generator=g).to(device), torch.ones(32, 17, 1, device=device)
    return model.to(device), x.to(device), lambda out: joints_mse_loss(out.float(), target, weight), 32


def images_per_second(workload: str, method: str, variant: str, iters: int, device) -> float:
    import optim
    from tasks.engine.acceleration import autocast

    torch.manual_seed(0)
    torch._dynamo.reset()  # each row compiles its own model (the cache would fill up and fall back)
    model, x, loss_fn, batch = synthetic_workload(workload, device)
    if "channels_last" in variant:
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    net = torch.compile(model) if "compile" in variant else model
    opt = optim.build(model.parameters(), "sgd", lr=0.01, momentum=0.9, method=method, model=model)
    amp = "bf16" if "bf16" in variant else "none"

    def closure():
        opt.zero_grad()
        with autocast(amp, device):
            loss = loss_fn(net(x))
        loss.backward()
        return loss

    for _ in range(3):  # warm-up: allocations, cuDNN autotuning, compilation
        opt.step(closure)
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(iters):
        opt.step(closure)
    torch.cuda.synchronize()
    return iters * batch / (time.perf_counter() - start)


def throughput(iters: int, deadline: float) -> None:
    torch.backends.cudnn.benchmark = True
    device = torch.device("cuda")
    variants = ["fp32", "bf16", "bf16+channels_last", "bf16+channels_last+compile"]  # compile last: slowest
    for variant in variants:
        for workload in ("cifar_resnet18 b128", "simplebaseline_r50 256x192 b32"):
            sgd = None
            for method in ("none", "sam", "bsam"):
                item = f"{workload} {variant} {method if method != 'none' else 'sgd'}"
                if time.perf_counter() > deadline:
                    report("throughput", item, "skipped", "(time budget)")
                    continue
                try:
                    rate = images_per_second(workload, method, variant, iters, device)
                except Exception as err:  # report and go on: the table is the deliverable
                    report("throughput", item, "FAIL", f"{type(err).__name__}: {str(err).splitlines()[0][:120]}")
                    continue
                sgd = sgd or (rate if method == "none" else None)
                ratio = f" ({rate / sgd:.2f}x SGD)" if sgd else ""
                report("throughput", item, "measured", f"{rate:.0f} images/s{ratio}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=480, help="seconds for the whole check")
    parser.add_argument("--iters", type=int, default=20, help="timed steps per throughput row")
    parser.add_argument("--quick", action="store_true",
                        help="the CPU part only, on the least data (seconds): what `make test` runs")
    args = parser.parse_args()
    started = time.perf_counter()
    gpu = torch.cuda.is_available() and not args.quick
    print(f"torch {torch.__version__}; "
          f"{torch.cuda.get_device_name(0) if gpu else 'no CUDA device or --quick: CPU-safe parts only'}",
          flush=True)
    if args.quick:
        report("pytest -m cuda", "CUDA-marked tests", "skipped", "(--quick)")
    else:
        cuda_tests()
    with tempfile.TemporaryDirectory() as out:
        torchrun_training(Path(out), TRAINING["quick" if args.quick else "full"])
    if gpu:
        optimizer_overhead(10)
        communication()
        throughput(args.iters, started + args.budget - 10)
    else:
        for part in ("optim_overhead", "communication", "throughput"):
            report(part, "CUDA rows", "skipped", "(--quick)" if args.quick else "(no CUDA device)")
    print(f"\n| part | item | status | detail |\n|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    failed = [r for r in rows if r[2] == "FAIL"]
    print(f"\n{len(failed)} failed, {time.perf_counter() - started:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
