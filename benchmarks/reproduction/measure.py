"""What a finished run's weights are measured for: test curve, train-set accuracy, the top
Hessian eigenvalue, the trace and a 1-D landscape, and the side-by-side flatness comparison
of each method's first clean seed."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import torch

from tasks.engine import config as config_lib
from tasks.engine import task as task_registry
from tasks.engine.weights import load_file_strict as load_model_weights
from tasks.engine.io import save_json
from tasks.engine.flatness_pictures import draw_comparison
from tasks.engine.flatness_runs import compare_checkpoints, measure_checkpoint

from .plan import Job


@torch.no_grad()
def train_set_accuracy(cfg_path: Path, opts: list[str], checkpoint: Path) -> dict:
    """Top-1 (%) on the training images without augmentation, model in eval mode: against the
    labels it was trained on and against the clean labels (they differ under label noise)."""
    cfg = config_lib.load(cfg_path, opts)
    clean_cfg = config_lib.load(cfg_path, [*opts, "DATASET.LABEL_NOISE", "0.0"])
    task = task_registry.get(cfg.TASK)(cfg)
    model = task.build_model()
    load_model_weights(model, checkpoint)
    model.eval()
    train_set, test_set = task.build_datasets()
    clean_targets = torch.tensor(task_registry.get(cfg.TASK)(clean_cfg).build_datasets()[0].targets)
    train_set.transform = test_set.transform
    loader = torch.utils.data.DataLoader(train_set, batch_size=500, shuffle=False, num_workers=0)
    predictions = torch.cat([model(images).argmax(1) for images, _ in loader])
    trained_on = torch.tensor(train_set.targets)
    return {"train_acc": (predictions == trained_on).float().mean().item() * 100,
            "train_acc_clean_labels": (predictions == clean_targets).float().mean().item() * 100}


def test_curve(run_dir: Path) -> list[list[float]]:
    """``[[training seconds so far, test top-1], ...]`` at each evaluated epoch."""
    curve, seconds = [], 0.0
    with open(run_dir / "metrics.csv", newline="") as f:
        for row in csv.DictReader(f):
            seconds += float(row["train_seconds"])
            if row.get("val_top1"):
                curve.append([seconds, float(row["val_top1"])])
    return curve


def measure_run(job: Job, cfg: Path, opts: list[str], run_dir: Path, results: dict, cpu_seconds: float,
                args) -> dict:
    """The record of a finished run: what the tables and the figure need."""
    record = {"name": job.name, "row": job.row, "method": job.method, "mult": job.mult,
              "noise": job.noise, "seed": job.seed, "amp": job.amp, "opts": opts,
              "epochs": results["epochs"], "acc": results["final"]["val_top1"],
              "wall_seconds": results["train_seconds"], "cpu_seconds": cpu_seconds,
              "epoch_seconds": results["train_seconds"] / max(results["epochs"], 1),
              "curve": test_curve(run_dir)}
    record.update(train_set_accuracy(cfg, opts, run_dir / "checkpoint_last.pth"))
    if job.noise == 0:
        flat = measure_checkpoint(
            config_lib.load(cfg, opts), run_dir / "checkpoint_last.pth", batches=args.flatness_batches,
            topk=1, trace_samples=args.trace_samples, landscape="1d", steps=args.landscape_steps,
            iters=args.lanczos_iters, seed=0)
        record.update(top_eig=flat["eigenvalues"]["top"][0], trace=flat["trace"]["trace"],
                      landscape_1d=flat["landscape_1d"])
    return record


def compared(jobs: list[Job]) -> list[Job]:
    """The runs compared side by side: each method's first clean seed at the common budget
    (the paper's four methods)."""
    first = {}
    for job in jobs:
        if job.noise == 0 and job.mult == 1 and job.amp == "default" and job.method in ("sgd", "sam", "bsam", "bsam_ref"):
            first.setdefault(job.method, job)
    return list(first.values())


def flatness_comparison(jobs: list[Job], planned: dict[str, list[str]], weights: dict[str, Path],
                        cfg: Path, out: Path, ledger: Path | None, args) -> dict | None:
    """Measure the compared runs together once all their weights exist (kept in the ledger)."""
    chosen = compared(jobs)
    stored = ledger / "flatness_comparison.json" if ledger else None
    names = [job.name for job in chosen]
    if stored and stored.is_file():
        comparison = json.loads(stored.read_text())
        if [e["checkpoint_name"] for e in comparison["entries"]] == names:
            draw_comparison(comparison, out / "flatness")
            return comparison
    if len(chosen) < 2 or not all(weights.get(n) and weights[n].is_file() for n in names):
        return None
    print(f"comparing the flatness of {', '.join(names)} (same batches and directions)", flush=True)
    comparison = compare_checkpoints(
        [(config_lib.load(cfg, planned[n]), weights[n]) for n in names], [job.label(0) for job in chosen],
        batches=args.flatness_batches, topk=args.compare_topk, iters=max(args.lanczos_iters, args.compare_topk),
        trace_samples=args.trace_samples, landscape="both", steps=args.landscape_steps, seed=0)
    for entry, name in zip(comparison["entries"], names):
        entry["checkpoint_name"] = name
    save_json(comparison, out / "flatness" / "flatness.json")
    if stored:
        save_json(comparison, stored)
    draw_comparison(comparison, out / "flatness")
    return comparison
