"""Reproduce the BSAM paper's CIFAR comparison: SGD, SAM, BSAM and BSAM in the authors'
code's mode (SAM.REFERENCE_COMPAT), same model, data, schedule and seeds.

For every method and seed it trains through ``tools/train.py`` (a subprocess, the recipe as
``--opts`` overrides of a config), then measures the final weights with
``tasks.engine.flatness`` (top Hessian eigenvalue, Hutchinson trace, a 1-D landscape on a
fixed sample of training batches).  It also trains each method under symmetric label noise
(``DATASET.LABEL_NOISE``).  Writes ``results.md`` (the table), ``results.json`` and
``reproduce_cifar.png`` to ``--out`` and prints the command behind each row.

    # CPU-sized, on the embedded subset (CIFAR ResNet-20, 10 epochs, 3 seeds; the README's
    # table, about 1 h 50 min on 2 cores)
    python benchmarks/reproduce_cifar.py --noise-seeds 0 --flatness-batches 1
    # GPU-sized, the paper's recipe (ResNet-18, 200 epochs) on full CIFAR-10 / CIFAR-100
    python benchmarks/reproduce_cifar.py --data /data/cifar10        # holds cifar-10-batches-py
    python benchmarks/reproduce_cifar.py --data /data/cifar100 --model wrn28_10
    # smoke run
    python benchmarks/reproduce_cifar.py --epochs 2 --seeds 0 --max-iters 5 --flatness-batches 1

Finished runs are reused (their ``results.json`` is read, not retrained), so an
interrupted benchmark continues where it stopped.  Accuracy is the test top-1 after the
last epoch (not the best epoch: picking the best on the test set flatters every method).
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from tasks.engine import config as config_lib  # noqa: E402
from tasks.engine.io import save_figure, save_json, atomic_write  # noqa: E402
from tools.flatness import draw_landscape_1d, measure_checkpoint  # noqa: E402

DEFAULT_DATA = REPO.parent / "shared" / "data" / "cifar10_subset"
BASE_CONFIG = REPO / "configs" / "demo" / "cls_cifar10_subset_tiny.yaml"

#: The sharpness-aware part of each row (the paper's CIFAR settings: rho 0.05, rho_min
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

#: Model and length: a CPU-sized run on the subset, the paper's on full CIFAR.
PRESETS = {
    "cpu": {"model": "cifar_resnet20", "epochs": 10, "workers": 2},
    "paper": {"model": "cifar_resnet18", "epochs": 200, "workers": 4},
}


def recipe_opts(data: Path, model: str, num_classes: int, epochs: int, workers: int,
                max_iters: int) -> list[str]:
    """The paper's CIFAR recipe, spelled out in full so no default of the base config leaks in."""
    return [
        "DATASET.ROOT", short(data), "DATASET.FORMAT", "auto", "DATASET.AUGMENT", "cifar",
        "DATASET.IMAGE_SIZE", "32", "DATASET.CUTOUT", "16",
        "MODEL.NAME", model, "MODEL.NUM_CLASSES", str(num_classes), "MODEL.PRETRAINED", "",
        "LOSS.LABEL_SMOOTHING", "0.1",
        "TRAIN.BATCH_SIZE_PER_GPU", "128", "TRAIN.END_EPOCH", str(epochs),
        "TRAIN.MAX_ITERS_PER_EPOCH", str(max_iters), "TRAIN.OPTIMIZER", "sgd", "TRAIN.LR", "0.05",
        "TRAIN.LR_SCHEDULER", "cosine", "TRAIN.LR_END", "0.0", "TRAIN.WARMUP_EPOCHS", "0.0",
        "TRAIN.MOMENTUM", "0.9", "TRAIN.NESTEROV", "false", "TRAIN.WD", "0.001",
        "TRAIN.EVAL_EVERY", str(epochs),  # test once, at the end: epoch times stay training times
        "TEST.BATCH_SIZE_PER_GPU", "500", "WORKERS", str(workers),
    ]


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


def run_prefix(method: str, noise: float) -> str:
    return f"{method}_noise{round(noise * 100)}_seed"


def train_command(cfg: Path, opts: list[str]) -> list[str]:
    return [sys.executable, "tools/train.py", "--cfg", short(cfg), "--opts", *opts]


def _quoted(words: list[str]) -> str:
    return " ".join(shlex.quote(w) for w in words)


def script_preamble(recipe: list[str], flatness_args: list[str]) -> list[str]:
    """Shell arrays for what every row shares, so each row's command shows only its own keys."""
    return [f"RECIPE=({_quoted(recipe)})", f"FLATNESS=({_quoted(flatness_args)})"]


def row_command(cfg: Path, row_opts: list[str], seeds: list[int], name: str, run_root: Path,
                measure: bool) -> str:
    """A shell loop over the seeds of one table cell: train, then (clean runs) measure.

    The command is ``"${RECIPE[@]}"`` + ``row_opts`` + the seed's ``SEED``/``NAME``."""
    per_seed = f'"${{RECIPE[@]}}" {_quoted(row_opts)} SEED $s NAME {name}$s'
    text = f"python tools/train.py --cfg {shlex.quote(short(cfg))} --opts {per_seed}"
    if measure:
        run_dir = short(run_root / "classification") + f"/{name}$s"
        text += (f" && python tools/flatness.py --cfg {shlex.quote(short(cfg))} --checkpoint "
                 f'{run_dir}/checkpoint_last.pth "${{FLATNESS[@]}}" --out {run_dir}/flatness --opts {per_seed}')
    seeds_text = " ".join(str(s) for s in seeds)
    return f"for s in {seeds_text}; do {text}; done"


def train(cfg: Path, opts: list[str], run_dir: Path, log_path: Path, epochs: int) -> dict:
    """Train one run (or reuse a finished one) and return its ``results.json``."""
    results_path = run_dir / "results.json"
    if results_path.is_file():
        results = json.loads(results_path.read_text())
        if results.get("epochs") == epochs:
            print(f"  reusing {run_dir}")
            return results
    log_path.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.run(train_command(cfg, opts), cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        tail = "".join(log_path.read_text().splitlines(keepends=True)[-15:])
        sys.exit(f"training failed (exit {proc.returncode}); log {log_path}:\n{tail}")
    print(f"  trained in {time.perf_counter() - start:.0f} s")
    return json.loads(results_path.read_text())


def mean_std(values: list[float]) -> tuple[float, float]:
    if not values:
        return float("nan"), float("nan")
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def fmt(values: list[float], digits: int = 2) -> str:
    if not values:
        return "–"
    mean, std = mean_std(values)
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if len(values) > 1 else f"{mean:.{digits}f}"


def summarise(runs: list[dict], methods: list[str], noise: float) -> list[dict]:
    rows = []
    sgd_epoch = [r["epoch_seconds"] for r in runs if r["method"] == "sgd" and r["noise"] == 0]
    for m in methods:
        clean = [r for r in runs if r["method"] == m and r["noise"] == 0]
        noisy = [r for r in runs if r["method"] == m and r["noise"] > 0]
        epoch = [r["epoch_seconds"] for r in clean]
        rows.append({
            "method": m,
            "acc": [r["acc"] for r in clean],
            "top_eig": [r["top_eig"] for r in clean if "top_eig" in r],
            "trace": [r["trace"] for r in clean if "trace" in r],
            "acc_noisy": [r["acc"] for r in noisy],
            "noise": noise,
            "epoch_seconds": statistics.fmean(epoch) if epoch else None,  # JSON has no NaN
            "time_vs_sgd": (statistics.fmean(epoch) / statistics.fmean(sgd_epoch)
                            if epoch and sgd_epoch else None),
        })
    return rows


def markdown(rows: list[dict], meta: dict) -> str:
    noise_pct = round(meta["noise"] * 100)
    lines = [
        f"# CIFAR reproduction: {meta['model']} on `{meta['data']}`",
        "",
        f"{meta['epochs']} epochs{' (capped at ' + str(meta['max_iters']) + ' it/epoch)' if meta['max_iters'] else ''}, "
        f"seeds {meta['seeds']}, batch 128, SGD lr 0.05 cosine, momentum 0.9, wd 1e-3, "
        f"label smoothing 0.1, rho 0.05, rho_min 0.05 -> 0; device {meta['device']}. "
        f"Accuracy: test top-1 (%) after the last epoch, mean ± std over seeds. Flatness on "
        f"{meta['flatness_batches']} training batches of 128 (BN in eval mode): top Hessian "
        f"eigenvalue (Lanczos, {meta['lanczos_iters']} steps) and Hutchinson trace "
        f"({meta['trace_samples']} samples). Time: the trainer's wall time per epoch (one "
        f"final test pass included), clean runs, relative to SGD.",
        "",
        f"| method | test acc (%) | top eigenvalue | Hessian trace | acc, {noise_pct}% label noise (%) | time/epoch vs SGD |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        ratio = f"{r['time_vs_sgd']:.2f}x" if r["time_vs_sgd"] is not None else "–"
        seconds = f" ({r['epoch_seconds']:.1f} s)" if r["epoch_seconds"] is not None else ""
        lines.append(f"| {LABELS[r['method']]} | {fmt(r['acc'])} | {fmt(r['top_eig'])} | {fmt(r['trace'], 1)} | "
                     f"{fmt(r['acc_noisy'])} | {ratio}{seconds} |")
    lines += ["", "Commands behind the rows (bash, from the repository root):", "", "```bash",
              *meta["commands"], "```"]
    return "\n".join(lines) + "\n"


def figure(rows: list[dict], landscapes: dict[str, dict], noise: float) -> Figure:
    fig = Figure(figsize=(10, 3.8), dpi=120)
    ax = fig.add_subplot(1, 2, 1)
    xs = range(len(rows))
    width = 0.38
    for offset, key, label in ((-width / 2, "acc", "clean"), (width / 2, "acc_noisy", f"{round(noise * 100)}% label noise")):
        means = [mean_std(r[key])[0] for r in rows]
        stds = [mean_std(r[key])[1] for r in rows]
        ax.bar([x + offset for x in xs], means, width, yerr=stds, capsize=3, label=label)
    ax.set_xticks(list(xs), [LABELS[r["method"]].replace(" (", "\n(") for r in rows], fontsize=8)
    ax.set_ylabel("test top-1 (%)")
    ax.set_title("accuracy (mean ± std over seeds)", fontsize=9)
    finite = [mean_std(r[k])[0] for r in rows for k in ("acc", "acc_noisy") if r[k]]
    if finite:
        ax.set_ylim(max(0.0, min(finite) - 10), min(100.0, max(finite) + 5))
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    draw_landscape_1d(fig.add_subplot(1, 2, 2), {LABELS[m]: land for m, land in landscapes.items()},
                      title="training loss along a filter-normalised direction (first seed)")
    fig.tight_layout()
    return fig


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA,
                   help="CIFAR-10/100 folder (torchvision python format) or an ImageFolder; "
                        "default: the embedded subset")
    p.add_argument("--preset", choices=["auto", *PRESETS], default="auto",
                   help="cpu (ResNet-20, 10 epochs) or paper (ResNet-18, 200 epochs); "
                        "auto: cpu on the default subset, paper when --data is given")
    p.add_argument("--model", help="MODEL.NAME (default: the preset's)")
    p.add_argument("--epochs", type=int, help="default: the preset's")
    p.add_argument("--max-iters", type=int, default=0, help="cap iterations per epoch (smoke runs)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS))
    p.add_argument("--noise", type=float, default=0.2, help="label-noise rate of the noisy runs (0: skip them)")
    p.add_argument("--noise-seeds", type=int, nargs="+", help="seeds of the noisy runs (default: --seeds)")
    p.add_argument("--cfg", type=Path, default=BASE_CONFIG, help="base config the recipe overrides "
                   "(default: configs/demo/cls_cifar10_subset_tiny.yaml; every recipe key is overridden)")
    p.add_argument("--flatness-batches", type=int, default=2)
    p.add_argument("--lanczos-iters", type=int, default=20)
    p.add_argument("--trace-samples", type=int, default=20)
    p.add_argument("--landscape-steps", type=int, default=21)
    p.add_argument("--workers", type=int, help="data loader workers (default: the preset's)")
    p.add_argument("--out", type=Path, help="default: output/benchmarks/reproduce_cifar_<preset>")
    p.add_argument("--dry-run", action="store_true", help="print the training commands and stop")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    # user paths are relative to where they ran this; runs and commands start in the repo root
    args.data, args.cfg = args.data.resolve(), args.cfg.resolve()
    args.out = args.out.resolve() if args.out else None
    os.chdir(REPO)
    preset_name = args.preset if args.preset != "auto" else (
        "cpu" if args.data.resolve() == DEFAULT_DATA.resolve() else "paper")
    preset = PRESETS[preset_name]
    model = args.model or preset["model"]
    epochs = args.epochs or preset["epochs"]
    workers = preset["workers"] if args.workers is None else args.workers
    out = (args.out or REPO / "output" / "benchmarks" / f"reproduce_cifar_{preset_name}").resolve()
    if not args.data.exists():
        sys.exit(f"error: data folder {args.data} not found; pass --data with the folder holding "
                 f"cifar-10-batches-py / cifar-100-python (or an ImageFolder with train/ and test/)")
    data = args.data.resolve()
    num_classes = count_classes(data)
    noise_seeds = args.noise_seeds or args.seeds
    base = recipe_opts(data, model, num_classes, epochs, workers, args.max_iters)

    run_root = out / "runs"
    flatness_args = ["--batches", str(args.flatness_batches), "--topk", "1", "--iters",
                     str(args.lanczos_iters), "--trace-samples", str(args.trace_samples),
                     "--landscape", "1d", "--steps", str(args.landscape_steps), "--seed", "0"]
    recipe = [*base, "OUTPUT_DIR", short(run_root)]
    commands = script_preamble(recipe, flatness_args)
    jobs = []  # (method, noise, seed, name, opts)
    for method in args.methods:
        commands.append(f"# {LABELS[method]}")
        groups = [(0.0, args.seeds)] + ([(args.noise, noise_seeds)] if args.noise > 0 else [])
        for noise, seeds in groups:
            row_opts = [*METHODS[method], "DATASET.LABEL_NOISE", str(noise)]
            prefix = run_prefix(method, noise)
            commands.append(row_command(args.cfg, row_opts, seeds, prefix, run_root, measure=noise == 0))
            jobs += [(method, noise, seed, f"{prefix}{seed}",
                      [*recipe, *row_opts, "SEED", str(seed), "NAME", f"{prefix}{seed}"])
                     for seed in seeds]
    if args.dry_run:
        print("\n".join(commands))
        return 0

    print(f"{len(jobs)} runs of {model} ({num_classes} classes, {epochs} epochs) -> {out}")
    runs, landscapes = [], {}
    for method, noise, seed, name, opts in jobs:
        print(f"[{len(runs) + 1}/{len(jobs)}] {name}")
        run_dir = run_root / "classification" / name
        results = train(args.cfg, opts, run_dir, out / "logs" / f"{name}.log", epochs)
        record = {"method": method, "noise": noise, "seed": seed, "run_dir": str(run_dir),
                  "acc": results["final"]["val_top1"],
                  "epoch_seconds": results["train_seconds"] / max(results["epochs"], 1)}
        if noise == 0:
            flat_path = run_dir / "flatness" / "flatness.json"
            if flat_path.is_file():
                flat = json.loads(flat_path.read_text())
            else:
                cfg = config_lib.load(args.cfg, opts)
                flat = measure_checkpoint(
                    cfg, run_dir / "checkpoint_last.pth", batches=args.flatness_batches, topk=1,
                    trace_samples=args.trace_samples, landscape="1d", steps=args.landscape_steps,
                    iters=args.lanczos_iters, seed=0)
                save_json(flat, flat_path)
            record.update(top_eig=flat["eigenvalues"]["top"][0], trace=flat["trace"]["trace"])
            landscapes.setdefault(method, flat["landscape_1d"])
            print(f"  acc {record['acc']:.2f}  top eig {record['top_eig']:.4g}  trace {record['trace']:.4g}")
        else:
            print(f"  acc {record['acc']:.2f} (label noise {noise})")
        runs.append(record)

    rows = summarise(runs, args.methods, args.noise)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    meta = {"model": model, "data": str(data), "epochs": epochs, "max_iters": args.max_iters,
            "seeds": args.seeds, "noise_seeds": noise_seeds, "noise": args.noise, "device": device,
            "flatness_batches": args.flatness_batches, "lanczos_iters": args.lanczos_iters,
            "trace_samples": args.trace_samples, "commands": commands}
    text = markdown(rows, meta)
    atomic_write(out / "results.md", lambda tmp: Path(tmp).write_text(text))
    save_json({"meta": meta, "rows": rows, "runs": runs}, out / "results.json")
    save_figure(figure(rows, landscapes, args.noise), out / "reproduce_cifar.png")
    print()
    print(text)
    print(f"wrote {out / 'results.md'}, {out / 'results.json'}, {out / 'reproduce_cifar.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
