"""Training one run (a ``tools/train.py`` subprocess, continued after an interruption), the
lock that keeps two benchmark processes off one run, the ledger of finished runs and the
time estimates."""
from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import torch

from tasks.engine.io import save_torch
from tasks.engine.run_dir import try_lock

from .plan import COST, METHODS, REPO, Job, Preset, same_recipe, train_command


def train(cfg: Path, opts: list[str], run_dir: Path, log_path: Path, threads: int) -> tuple[dict, float]:
    """Train one run, continuing its checkpoint if an earlier attempt was interrupted.
    Returns its ``results.json`` and the CPU seconds of the whole run (on one thread this is
    the compute time whatever else shares the machine; wall time is not).  A resumed run's
    earlier attempts are counted at this attempt's CPU seconds per epoch."""
    results_path = run_dir / "results.json"
    resume = (run_dir / "checkpoint_last.pth").is_file() and not results_path.is_file()
    first_epoch = torch.load(run_dir / "checkpoint_last.pth", weights_only=True)["epoch"] if resume else 0
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(log_path, "a") as log:
        proc = subprocess.run(train_command(cfg, opts, resume), cwd=REPO, stdout=log,
                              stderr=subprocess.STDOUT, env=env)
    if proc.returncode != 0:
        tail = "".join(log_path.read_text().splitlines(keepends=True)[-15:])
        sys.exit(f"training failed (exit {proc.returncode}); log {log_path}:\n{tail}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    results = json.loads(results_path.read_text())
    return results, cpu * results["epochs"] / max(results["epochs"] - first_epoch, 1)


@contextmanager
def claimed(lock_file: Path):
    """Yield whether this process holds ``lock_file``: a second benchmark process on the same
    checkout skips the run the first one trains, and a killed run is free for the next start."""
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    fd = try_lock(lock_file)
    try:
        yield fd is not None
    finally:
        if fd is not None:
            os.close(fd)


def keep_weights(run_dir: Path, path: Path) -> None:
    """The final weights alone (about 1 MB for ResNet-20): what a later comparison needs
    when the run folder is gone."""
    state = torch.load(run_dir / "checkpoint_last.pth", weights_only=True)["model"]
    save_torch(state, path)


def reusable(job: Job, opts: list[str], run_root: Path, ledger: Path | None) -> dict | None:
    """The record of a finished run with exactly these options (its run folder's, else the
    ledger's), if there is one."""
    places = [run_root / "classification" / job.name / "record.json"]
    if ledger:
        places.append(ledger / f"{job.name}.json")
    for path in places:
        if path.is_file():
            record = json.loads(path.read_text())
            if same_recipe(record.get("opts", []), opts):
                return record
    return None


def estimate_seconds(job: Job, epochs: int, preset: Preset, done: list[dict]) -> float:
    """Seconds one run will take: from finished runs where there are any, else the guesses."""
    per_epoch = {m: statistics.fmean(r["cpu_seconds"] / r["epochs"] for r in done if r["method"] == m and r["amp"] == "default")
                 for m in METHODS if any(r["method"] == m and r["amp"] == "default" for r in done)}
    sgd = per_epoch.get("sgd", preset.epoch_seconds)
    seconds = per_epoch.get(job.method, sgd * COST[job.method])
    if job.amp == "fp32" and preset.amp == "bf16":
        seconds *= 2.3  # bf16 measured 2.3x faster than fp32 for ResNet-20 on this CPU (AMX)
    measure = 30.0 if job.noise == 0 else 5.0  # flatness / train-set accuracy after training
    return seconds * epochs * job.mult + measure


def hours(seconds: float) -> str:
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"
