"""Reproduce the BSAM paper's CIFAR comparison: SGD, SAM, BSAM and BSAM in the authors'
code's mode (SAM.REFERENCE_COMPAT), same model, data, schedule and seeds; optionally also at
equal compute (SGD for 3x and SAM for 1.5x the epochs: BSAM costs three passes, SAM two).

For every run it trains through ``tools/train.py`` (a subprocess; the recipe as ``--opts``
overrides of a config), then measures the final weights: test top-1, top-1 on the training
images (no augmentation, eval mode; against the training labels and, for noisy runs, also
against their clean labels), and for clean runs the top Hessian eigenvalue, the Hutchinson
trace and a 1-D loss landscape on a fixed sample of training batches.  The first clean
seed of each method is also compared side by side (``tools/flatness.py``'s comparison: the
same batches and directions, top-50 Hessian spectra, 1-D and 2-D landscapes).

    # converged, CPU-sized (ResNet-20 on 100 images/class of the embedded subset, 150 epochs,
    # bf16; SGD ends above 95% train accuracy): the README's table, about 5 h on one core
    python benchmarks/reproduce_cifar.py --preset converged
    python benchmarks/reproduce_cifar.py --preset converged --dry-run   # rows, commands, time
    # short, under-fitted (ResNet-20, 10 epochs, the whole subset)
    python benchmarks/reproduce_cifar.py --preset cpu --noise-seeds 0 --flatness-batches 1
    # GPU-sized, the paper's recipe (ResNet-18, 200 epochs) on full CIFAR-10 / CIFAR-100
    python benchmarks/reproduce_cifar.py --data /data/cifar10        # holds cifar-10-batches-py

Every finished run leaves a record (``record.json`` in its run folder and a copy in
``--ledger``, a folder meant to be kept under version control); records are reused, never
retrained.  An interrupted run continues from its last epoch checkpoint (``--resume``), so a
stop loses at most one epoch of one run.  Several processes can share one checkout (start the
same command once per free core): each holds a lock on the run it trains and takes the next
run no other process holds.  Accuracy is the test top-1 after the last epoch
(not the best epoch: picking the best on the test set flatters every method).
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import shlex
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from tasks.engine import config as config_lib  # noqa: E402
from tasks.engine import task as task_registry  # noqa: E402
from tasks.engine.checkpoint import load_model_weights  # noqa: E402
from tasks.engine.io import atomic_write, save_figure, save_json, save_torch  # noqa: E402
from tasks.engine.run_dir import try_lock  # noqa: E402
from tools.flatness import compare_checkpoints, draw_comparison, draw_landscape_1d, measure_checkpoint  # noqa: E402

DEFAULT_DATA = REPO.parent / "shared" / "data" / "cifar10_subset"
BASE_CONFIG = REPO / "configs" / "demo" / "cls_cifar10_subset_tiny.yaml"

#: The sharpness-aware part of each method (the paper's CIFAR settings: rho 0.05, rho_min
#: 0.05 -> 0 following the cosine LR).
METHODS = {
    "sgd": ["SAM.METHOD", "none"],
    "sam": ["SAM.METHOD", "sam", "SAM.RHO", "0.05"],
    "bsam": ["SAM.METHOD", "bsam", "SAM.RHO", "0.05", "SAM.RHO_MIN", "0.05", "SAM.RHO_MIN_END", "0.0",
             "SAM.REFERENCE_COMPAT", "false"],
    "bsam_ref": ["SAM.METHOD", "bsam", "SAM.RHO", "0.05", "SAM.RHO_MIN", "0.05", "SAM.RHO_MIN_END", "0.0",
                 "SAM.REFERENCE_COMPAT", "true"],
}
LABELS = {"sgd": "SGD", "sam": "SAM", "bsam": "BSAM", "bsam_ref": "BSAM (reference-code mode)"}
#: Time per epoch relative to SGD, for estimates before a run has measured its own
#: (the README's measurements: 3 and 2 forward-backward passes, minus shared data loading).
COST = {"sgd": 1.0, "sam": 1.9, "bsam": 2.75, "bsam_ref": 2.6}
#: Equal-compute rows: a method trained for this many times the epochs matches BSAM's cost.
EQUAL_COMPUTE = {"sgd": 3.0, "sam": 1.5}


@dataclass
class Preset:
    model: str
    epochs: int
    workers: int
    per_class: int = 0  # DATASET.TRAIN_PER_CLASS (0 = the whole training split)
    amp: str = "none"
    noise: float = 0.2
    noise_seeds: list[int] | None = None  # None: the clean seeds
    noise_methods: tuple[str, ...] = ("sgd", "sam", "bsam", "bsam_ref")
    compute_seeds: list[int] = field(default_factory=list)  # equal-compute rows (none: skip)
    eval_every: int = 0  # epochs between test evaluations (0: only at the end)
    epoch_seconds: float = 20.0  # a guess of one SGD epoch, until a run has measured it
    check_fp32: bool = False  # one SGD run without bf16, to check that bf16 changes nothing


PRESETS = {
    # 100 images per class for 150 epochs: SGD ends above 95% train accuracy (250 per class for
    # 60 epochs, the same number of steps, left it at 84%), in about 5 h for every row.
    "converged": Preset(model="cifar_resnet20", epochs=150, workers=0, per_class=100, amp="bf16",
                        noise=0.4, noise_seeds=[0], noise_methods=("sgd", "sam", "bsam"),
                        compute_seeds=[0], eval_every=5, epoch_seconds=3.2, check_fp32=True),
    "cpu": Preset(model="cifar_resnet20", epochs=10, workers=2, epoch_seconds=17.3),
    "paper": Preset(model="cifar_resnet18", epochs=200, workers=4, epoch_seconds=15.0),
}


@dataclass
class Job:
    """One training run: a method at a budget (x the preset's epochs), a noise rate, a seed."""
    method: str
    mult: float
    noise: float
    seed: int
    amp: str

    @property
    def row(self) -> str:
        """The table row this run belongs to (seeds are averaged within a row)."""
        budget = "" if self.mult == 1 else f"_x{self.mult:g}"
        precision = "" if self.amp == "default" else f"_{self.amp}"
        return f"{self.method}{budget}{precision}_noise{round(self.noise * 100)}"

    @property
    def name(self) -> str:
        return f"{self.row}_seed{self.seed}"

    def label(self, epochs: int) -> str:
        text = LABELS[self.method]
        if self.mult != 1:
            text += f", {round(epochs * self.mult)} epochs (BSAM's compute)"
        if self.amp != "default":
            text += f", {self.amp} check"
        return text


def plan_jobs(preset: Preset, args) -> list[Job]:
    """Every run, most informative first: seed 0 of each method, the noisy runs, the
    equal-compute runs, then the other seeds (a partial benchmark is already a comparison)."""
    seeds, methods = args.seeds, args.methods
    noise_seeds = args.noise_seeds if args.noise_seeds is not None else (preset.noise_seeds or seeds)
    compute_seeds = args.compute_seeds if args.compute_seeds is not None else preset.compute_seeds
    jobs = [Job(m, 1, 0.0, seeds[0], "default") for m in methods]
    if args.noise > 0:
        jobs += [Job(m, 1, args.noise, s, "default") for s in noise_seeds for m in methods
                 if m in preset.noise_methods]
    jobs += [Job(m, EQUAL_COMPUTE[m], 0.0, s, "default") for s in compute_seeds[:1] for m in EQUAL_COMPUTE
             if m in methods]
    jobs += [Job(m, 1, 0.0, s, "default") for s in seeds[1:] for m in methods]
    jobs += [Job(m, EQUAL_COMPUTE[m], 0.0, s, "default") for s in compute_seeds[1:] for m in EQUAL_COMPUTE
             if m in methods]
    if preset.check_fp32 and preset.amp == "bf16" and "sgd" in methods:
        jobs.append(Job("sgd", 1, 0.0, seeds[0], "fp32"))
    unique = {}
    for job in jobs:
        unique.setdefault(job.name, job)
    return list(unique.values())


def recipe_opts(data: Path, preset: Preset, num_classes: int, epochs: int, max_iters: int) -> list[str]:
    """The paper's CIFAR recipe, spelled out in full so no default of the base config leaks in."""
    return [
        "DATASET.ROOT", short(data), "DATASET.FORMAT", "auto", "DATASET.AUGMENT", "cifar",
        "DATASET.IMAGE_SIZE", "32", "DATASET.CUTOUT", "16", "DATASET.TRAIN_PER_CLASS", str(preset.per_class),
        "MODEL.NAME", preset.model, "MODEL.NUM_CLASSES", str(num_classes), "MODEL.PRETRAINED", "",
        "LOSS.LABEL_SMOOTHING", "0.1",
        "TRAIN.BATCH_SIZE_PER_GPU", "128", "TRAIN.END_EPOCH", str(epochs),
        "TRAIN.MAX_ITERS_PER_EPOCH", str(max_iters), "TRAIN.OPTIMIZER", "sgd", "TRAIN.LR", "0.05",
        "TRAIN.LR_SCHEDULER", "cosine", "TRAIN.LR_END", "0.0", "TRAIN.WARMUP_EPOCHS", "0.0",
        "TRAIN.MOMENTUM", "0.9", "TRAIN.NESTEROV", "false", "TRAIN.WD", "0.001",
        # test once at the end, or every few epochs for the accuracy-vs-time curves
        "TRAIN.EVAL_EVERY", str(min(preset.eval_every or epochs, epochs)),
        "TEST.BATCH_SIZE_PER_GPU", "500", "WORKERS", str(preset.workers), "AMP", preset.amp,
    ]


def job_opts(job: Job, preset: Preset, epochs: int) -> list[str]:
    """What one run adds to the recipe (the table's row and the seed)."""
    opts = [*METHODS[job.method], "DATASET.LABEL_NOISE", str(job.noise)]
    if job.mult != 1:
        longer = round(epochs * job.mult)
        opts += ["TRAIN.END_EPOCH", str(longer), "TRAIN.EVAL_EVERY", str(preset.eval_every or longer)]
    if job.amp == "fp32":
        opts += ["AMP", "none"]
    return [*opts, "SEED", str(job.seed), "NAME", job.name]


def short(path: Path) -> str:
    """``path`` as the commands show it: relative to the repository when that reads better
    (``../shared/data/...``), absolute otherwise.  Runs start in the repository root."""
    rel = os.path.relpath(path, REPO)
    return rel if not rel.startswith(os.pardir + os.sep + os.pardir) else str(path)


def count_classes(data: Path) -> int:
    """100 for a CIFAR-100 folder, the number of class folders of an ImageFolder, else 10."""
    if (data / "cifar-100-python").is_dir() or data.name == "cifar-100-python":
        return 100
    train = data / "train"
    if train.is_dir():
        classes = [d for d in train.iterdir() if d.is_dir()]
        if classes:
            return len(classes)
    return 10


def _quoted(words: list[str]) -> str:
    return " ".join(shlex.quote(w) for w in words)


def train_command(cfg: Path, opts: list[str], resume: bool = False) -> list[str]:
    return [sys.executable, "tools/train.py", "--cfg", short(cfg), *(["--resume"] if resume else []),
            "--opts", *opts]


def same_recipe(a: list[str], b: list[str]) -> bool:
    """Whether two runs' options train the same thing (where their folders are does not count)."""
    def key(opts: list[str]) -> dict[str, str]:
        return {k: v for k, v in zip(opts[::2], opts[1::2]) if k != "OUTPUT_DIR"}
    return key(a) == key(b)


def shown_command(cfg: Path, opts: list[str]) -> str:
    """A run's command as the README shows it: the shared recipe is ``"${RECIPE[@]}"``."""
    return f'python tools/train.py --cfg {shlex.quote(short(cfg))} --opts "${{RECIPE[@]}}" {_quoted(opts)}'


# -- one run ---------------------------------------------------------------------------------------
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


# -- estimates -------------------------------------------------------------------------------------
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


# -- tables and figure -----------------------------------------------------------------------------
def mean_std(values: list[float]) -> tuple[float, float]:
    if not values:
        return float("nan"), float("nan")
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def fmt(values: list[float], digits: int = 2) -> str:
    if not values:
        return "–"
    mean, std = mean_std(values)
    text = f"{mean:.{digits}f} ± {std:.{digits}f}" if len(values) > 1 else f"{mean:.{digits}f}"
    return text + f" (n={len(values)})" if len(values) > 1 else text


def summarise(records: list[dict], jobs: list[Job], epochs: int) -> list[dict]:
    """One row per (method, budget, noise, precision): the runs of all its seeds."""
    sgd = [r["cpu_seconds"] for r in records if r["row"] == "sgd_noise0"]
    rows = []
    for job in jobs:
        if any(row["row"] == job.row for row in rows):
            continue
        runs = sorted((r for r in records if r["row"] == job.row), key=lambda r: r["seed"])
        wall = [r["cpu_seconds"] for r in runs]
        rows.append({
            "row": job.row, "label": job.label(epochs), "method": job.method, "mult": job.mult,
            "noise": job.noise, "amp": job.amp, "seeds": [r["seed"] for r in runs],
            "acc": [r["acc"] for r in runs], "train_acc": [r["train_acc"] for r in runs],
            "train_acc_clean_labels": [r["train_acc_clean_labels"] for r in runs],
            "top_eig": [r["top_eig"] for r in runs if "top_eig" in r],
            "trace": [r["trace"] for r in runs if "trace" in r],
            "time_vs_sgd": statistics.fmean(wall) / statistics.fmean(sgd) if wall and sgd else None,
        })
    return rows


def markdown(rows: list[dict], meta: dict) -> str:
    subset = f"{meta['per_class']} training images per class of " if meta["per_class"] else ""
    lines = [
        f"# CIFAR reproduction ({meta['preset']}): {meta['model']} on {subset}`{meta['data']}`",
        "",
        f"{meta['epochs']} epochs{' (capped at ' + str(meta['max_iters']) + ' it/epoch)' if meta['max_iters'] else ''}, "
        f"batch 128, SGD lr 0.05 cosine to 0, momentum 0.9, wd 1e-3, label smoothing 0.1, crop + flip + "
        f"cutout 16, rho 0.05, rho_min 0.05 -> 0; autocast {meta['amp']}; device {meta['device']}. "
        f"Test: top-1 (%) after the last epoch, mean ± std over seeds (n = number of seeds). Train: "
        f"top-1 (%) on the training images without augmentation, eval mode. Flatness on "
        f"{meta['flatness_batches']} training batch(es) of 128 (BN in eval mode): top Hessian eigenvalue "
        f"(Lanczos, {meta['lanczos_iters']} steps), Hutchinson trace ({meta['trace_samples']} samples). "
        f"Time: CPU time of the training process (one thread) relative to SGD's ({meta['epochs']} epochs).",
        "",
        "| method | test acc (%) | train acc (%) | top eigenvalue | Hessian trace | time vs SGD |",
        "|---|---|---|---|---|---|",
    ]
    ratio = lambda r: f"{r['time_vs_sgd']:.2f}x" if r["time_vs_sgd"] is not None else "–"  # noqa: E731
    for r in (r for r in rows if r["noise"] == 0):
        lines.append(f"| {r['label']} | {fmt(r['acc'])} | {fmt(r['train_acc'])} | {fmt(r['top_eig'])} | "
                     f"{fmt(r['trace'], 1)} | {ratio(r)} |")
    noisy = [r for r in rows if r["noise"] > 0]
    if noisy:
        pct = round(noisy[0]["noise"] * 100)
        lines += ["", f"With {pct}% symmetric label noise on the training labels (test labels clean):", "",
                  "| method | test acc (%) | train acc, noisy labels (memorisation) | train acc, their clean labels | time vs SGD |",
                  "|---|---|---|---|---|"]
        for r in noisy:
            lines.append(f"| {r['label']} | {fmt(r['acc'])} | {fmt(r['train_acc'])} | "
                         f"{fmt(r['train_acc_clean_labels'])} | {ratio(r)} |")
    if meta.get("remaining"):
        lines += ["", f"Not run yet: {', '.join(meta['remaining'])}."]
    lines += ["", "Commands behind the runs (bash, from the repository root):", "", "```bash",
              *meta["commands"], "```"]
    return "\n".join(lines) + "\n"


def figure(rows: list[dict], records: list[dict]) -> Figure:
    """Test accuracy against training time (mean over seeds) and the 1-D landscapes."""
    fig = Figure(figsize=(11, 4), dpi=110)
    ax = fig.add_subplot(1, 2, 1)
    for row in rows:
        curves = [r["curve"] for r in records if r["row"] == row["row"] and r["curve"]]
        if not curves:
            continue
        n = min(len(c) for c in curves)
        # each curve's wall clock stretched to its run's CPU time (the curve spans every attempt
        # of a resumed run, its last point the last epoch's end; wall_seconds only the last attempt)
        scale = [r["cpu_seconds"] / r["curve"][-1][0] for r in records if r["row"] == row["row"] and r["curve"]]
        xs = [statistics.fmean(c[i][0] * k for c, k in zip(curves, scale)) / 60 for i in range(n)]
        ys = [statistics.fmean(c[i][1] for c in curves) for i in range(n)]
        style = "--" if row["noise"] > 0 else ("-." if row["mult"] != 1 else "-")
        ax.plot(xs, ys, style, label=f"{row['label']}{' noisy' if row['noise'] else ''} (n={len(curves)})")
    ax.set_xlabel("training time (CPU minutes, one thread)")
    ax.set_ylabel("test top-1 (%)")
    ax.set_title("test accuracy against training time (mean over seeds)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6)
    landscapes = {}
    for row in rows:
        first = next((r for r in records if r["row"] == row["row"] and "landscape_1d" in r), None)
        if first and row["mult"] == 1 and row["amp"] == "default":
            landscapes[row["label"]] = first["landscape_1d"]
    if landscapes:
        draw_landscape_1d(fig.add_subplot(1, 2, 2), landscapes,
                          title="training loss along a filter-normalised direction (first seed)")
    fig.tight_layout()
    return fig


# -- the side-by-side flatness comparison ----------------------------------------------------------
def compared(jobs: list[Job]) -> list[Job]:
    """The runs compared side by side: each method's first clean seed at the common budget."""
    first = {}
    for job in jobs:
        if job.noise == 0 and job.mult == 1 and job.amp == "default":
            first.setdefault(job.method, job)
    return list(first.values())


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


# -- main ------------------------------------------------------------------------------------------
def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA,
                   help="CIFAR-10/100 folder (torchvision python format) or an ImageFolder; "
                        "default: the embedded subset")
    p.add_argument("--preset", choices=["auto", *PRESETS], default="auto",
                   help="converged (ResNet-20, 100 img/class, 150 epochs, bf16), cpu (ResNet-20, "
                        "10 epochs) or paper (ResNet-18, 200 epochs); auto: cpu on the default "
                        "subset, paper when --data is given")
    p.add_argument("--model", help="MODEL.NAME (default: the preset's)")
    p.add_argument("--epochs", type=int, help="default: the preset's")
    p.add_argument("--max-iters", type=int, default=0, help="cap iterations per epoch (smoke runs)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS))
    p.add_argument("--noise", type=float, help="label-noise rate of the noisy runs (0: skip them; "
                   "default: the preset's)")
    p.add_argument("--noise-seeds", type=int, nargs="+", help="seeds of the noisy runs (default: the preset's)")
    p.add_argument("--compute-seeds", type=int, nargs="*",
                   help="seeds of the equal-compute runs (SGD 3x, SAM 1.5x the epochs; default: the preset's)")
    p.add_argument("--cfg", type=Path, default=BASE_CONFIG, help="base config the recipe overrides "
                   "(default: configs/demo/cls_cifar10_subset_tiny.yaml; every recipe key is overridden)")
    p.add_argument("--flatness-batches", type=int, default=1)
    p.add_argument("--lanczos-iters", type=int, default=20)
    p.add_argument("--trace-samples", type=int, default=20)
    p.add_argument("--landscape-steps", type=int, default=21)
    p.add_argument("--compare-topk", type=int, default=50,
                   help="Hessian eigenvalues per model in the side-by-side comparison (the paper's figure: 50)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per training run (default 1)")
    p.add_argument("--workers", type=int, help="data loader workers (default: the preset's)")
    p.add_argument("--out", type=Path, help="default: output/benchmarks/reproduce_cifar_<preset>")
    p.add_argument("--ledger", type=Path, help="folder of finished-run records to reuse and add to "
                   "(default: benchmarks/results/reproduce_cifar_<preset> for the converged preset, else none)")
    p.add_argument("--dry-run", action="store_true", help="print every run's command and the estimated time, then stop")
    p.add_argument("--report", action="store_true", help="train nothing: write the table and figure of the "
                   "runs finished so far (the others are listed as not run yet)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    # user paths are relative to where they ran this; runs and commands start in the repo root
    args.data, args.cfg = args.data.resolve(), args.cfg.resolve()
    args.out = args.out.resolve() if args.out else None
    os.chdir(REPO)
    preset_name = args.preset if args.preset != "auto" else (
        "cpu" if args.data == DEFAULT_DATA.resolve() else "paper")
    base = PRESETS[preset_name]
    preset = Preset(**{**base.__dict__, "model": args.model or base.model,
                       "workers": base.workers if args.workers is None else args.workers})
    epochs = args.epochs or preset.epochs
    args.noise = preset.noise if args.noise is None else args.noise
    out = (args.out or REPO / "output" / "benchmarks" / f"reproduce_cifar_{preset_name}").resolve()
    ledger = args.ledger.resolve() if args.ledger else (
        REPO / "benchmarks" / "results" / f"reproduce_cifar_{preset_name}" if preset_name == "converged"
        and not args.max_iters and args.epochs is None else None)
    if not args.data.exists():
        sys.exit(f"error: data folder {args.data} not found; pass --data with the folder holding "
                 f"cifar-10-batches-py / cifar-100-python (or an ImageFolder with train/ and test/)")
    num_classes = count_classes(args.data)
    run_root = out / "runs"
    recipe = [*recipe_opts(args.data, preset, num_classes, epochs, args.max_iters), "OUTPUT_DIR", short(run_root)]
    jobs = plan_jobs(preset, args)

    def reusable(job: Job, opts: list[str]) -> dict | None:
        """The record of a finished run with exactly these options, if there is one."""
        places = [run_root / "classification" / job.name / "record.json"]
        if ledger:
            places.append(ledger / f"{job.name}.json")
        for path in places:
            if path.is_file():
                record = json.loads(path.read_text())
                if same_recipe(record.get("opts", []), opts):
                    return record
        return None

    planned = [(job, [*recipe, *job_opts(job, preset, epochs)]) for job in jobs]
    records = [r for r in (reusable(job, opts) for job, opts in planned) if r]
    todo = [(job, opts) for job, opts in planned if not any(r["name"] == job.name for r in records)]
    commands = [f"RECIPE=({_quoted(recipe)})"] + [f"# {job.label(epochs)}, seed {job.seed}\n" + shown_command(args.cfg, job_opts(job, preset, epochs))
                                                 for job in jobs]
    remaining = sum(estimate_seconds(job, epochs, preset, records) for job, _ in todo)
    print(f"{preset_name}: {len(jobs)} runs of {preset.model} ({num_classes} classes, {epochs} epochs), "
          f"{len(records)} done, {len(todo)} to run, estimated {hours(remaining)} "
          f"({args.threads} thread(s)) -> {out}")
    if args.dry_run or args.report:
        for job, opts in planned:
            state = "done" if job not in [j for j, _ in todo] else hours(estimate_seconds(job, epochs, preset, records))
            print(f"  {job.name:28s} {state}")
        print("\n".join(commands))
        if args.dry_run:
            return 0
        todo_names, todo = [job.name for job, _ in todo], []
    else:
        todo_names = []

    for job, opts in todo:
        remaining = sum(estimate_seconds(j, epochs, preset, records) for j, _ in todo[todo.index((job, opts)):])
        print(f"[{len(records) + 1}/{len(jobs)}] {job.name}: {len(todo) - todo.index((job, opts))} runs "
              f"remain, about {hours(remaining)}", flush=True)
        with claimed(run_root / ".claims" / f"{job.name}.lock") as mine:
            record = reusable(job, opts) if mine else None  # another process may have finished it
            if not mine or record:
                print(f"  {'finished' if record else 'being trained'} by another benchmark process: next run",
                      flush=True)
                if record:
                    records.append(record)
                else:
                    todo_names.append(job.name)
                continue
            run_dir = run_root / "classification" / job.name
            results, cpu_seconds = train(args.cfg, opts, run_dir, out / "logs" / f"{job.name}.log", args.threads)
            torch.set_num_threads(args.threads)
            record = measure_run(job, args.cfg, opts, run_dir, results, cpu_seconds, args)
            save_json(record, run_dir / "record.json")
            if ledger:
                save_json(record, ledger / f"{job.name}.json")
                if job in compared(jobs):
                    keep_weights(run_dir, ledger / f"{job.name}.pth")
        records.append(record)
        flat = f"  top eig {record['top_eig']:.4g}  trace {record['trace']:.4g}" if "top_eig" in record else ""
        print(f"  test {record['acc']:.2f}  train {record['train_acc']:.2f}{flat}  "
              f"({record['wall_seconds']:.0f} s)", flush=True)

    weights = {}
    for job in compared(jobs):
        for path in (run_root / "classification" / job.name / "checkpoint_last.pth",
                     *([ledger / f"{job.name}.pth"] if ledger else [])):
            if path.is_file() and job.name not in todo_names:
                weights.setdefault(job.name, path)
    flatness_comparison(jobs, dict((j.name, o) for j, o in planned), weights, args.cfg, out, ledger, args)
    rows = summarise(records, jobs, epochs)
    meta = {"preset": preset_name, "model": preset.model, "data": short(args.data), "epochs": epochs,
            "per_class": preset.per_class, "amp": preset.amp, "max_iters": args.max_iters,
            "seeds": args.seeds, "noise": args.noise,
            "device": "cuda" if torch.cuda.is_available() else f"cpu, {args.threads} thread(s)",
            "flatness_batches": args.flatness_batches, "lanczos_iters": args.lanczos_iters,
            "trace_samples": args.trace_samples, "commands": commands,
            "remaining": todo_names}
    text = markdown(rows, meta)
    atomic_write(out / "results.md", lambda tmp: Path(tmp).write_text(text))
    save_json({"meta": meta, "rows": rows, "runs": records}, out / "results.json")
    save_figure(figure(rows, records), out / "reproduce_cifar.png")
    print()
    print(text)
    print(f"wrote {out / 'results.md'}, {out / 'results.json'}, {out / 'reproduce_cifar.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
