"""Today's fine-tuning recipe against the timm/torchvision-style one, for SGD, SAM and BSAM.

One backbone (a timm ResNet-18 trained here on the CIFAR-10 subset, so that nothing is
downloaded) is fine-tuned on flowers5 with ``configs/transfer_flowers_*`` (today's recipe:
crop and flip, label smoothing, backbone LR x 0.1) and with ``configs/transfer_timm_*`` (EMA,
RandAugment, random erasing, mixup/cutmix, layer decay, no WD on norm/bias), both at the
same input size, epochs and seeds.  Prints a markdown table: best and final top-1 of the test
split (best = what model_best.pth holds: the better of raw and EMA for the new recipe), how
many runs kept the EMA, and the training process's CPU seconds per epoch (the whole run, with
its evaluations, over its epochs; on one thread the compute, whatever shares the machine).

Runs go through ``tools/train.py``.  Every finished run leaves a record in ``--ledger`` (a
folder meant for version control, one per backbone/size/epochs setting) and is never
retrained; an interrupted run continues from its last checkpoint.  Several processes can share
one checkout (start the command once per free core): each locks the run it trains and takes
the next free one.  The backbone's weights are not kept in the ledger, only their SHA-256: a
new checkout retrains the backbone when runs remain and stops if its weights differ.

    python benchmarks/transfer_recipes.py --seeds 0 1 2 --epochs 30 --pretrain-epochs 30
        [--size 32] [--amp auto] [--out output/transfer_recipes] [--report]
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.reproduction.plan import same_recipe  # noqa: E402
from benchmarks.reproduction.runs import claimed, train  # noqa: E402
from tasks.engine.io import save_json  # noqa: E402

RECIPES = {"today": "transfer_flowers", "timm-style": "transfer_timm"}
METHODS = ("sgd", "sam", "bsam")
LEDGER = REPO / "benchmarks" / "results" / "transfer_recipes"
WAIT_SECONDS = 30  # how often a process waiting for another's backbone looks again


@dataclass(frozen=True)
class Run:
    name: str
    cfg: Path
    opts: tuple  # KEY VALUE ... for tools/train.py
    recipe: str = ""
    method: str = ""


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def compared_opts(opts) -> list[str]:
    """The options that say what a run trains: the backbone's path is not one (its hash is)."""
    pairs = [(k, v) for k, v in zip(opts[::2], opts[1::2]) if k != "MODEL.PRETRAINED"]
    return [str(x) for pair in pairs for x in pair]


def recorded(run: Run, ledger: Path) -> dict | None:
    path = ledger / f"{run.name}.json"
    if path.is_file():
        record = json.loads(path.read_text())
        if same_recipe(record["opts"], compared_opts(run.opts)):
            return record
    return None


def train_and_record(run: Run, root: Path, ledger: Path, threads: int, **fields) -> dict:
    """Train ``run`` (or continue it) and write its record (with ``fields`` and the SHA-256 of
    its ``model_best.pth``)."""
    run_dir = root / "classification" / run.name
    results, cpu = train(run.cfg, [str(x) for x in run.opts], run_dir, root / "logs" / f"{run.name}.log", threads)
    with open(run_dir / "metrics.csv") as f:
        wall = statistics.fmean(float(r["train_seconds"]) for r in csv.DictReader(f))
    record = {"name": run.name, "recipe": run.recipe, "method": run.method,
              "opts": compared_opts(run.opts), "epochs": results["epochs"], "best": results["best"],
              "final": results["final"], "cpu_seconds_per_epoch": cpu / results["epochs"],
              "train_seconds_per_epoch": wall,
              "weights_sha256": sha256(run_dir / "model_best.pth"), **fields}
    save_json(record, ledger / f"{run.name}.json")
    return record


def backbone_weights(run: Run, root: Path, ledger: Path, threads: int) -> tuple[Path, str]:
    """The backbone's ``model_best.pth`` and its SHA-256, training it (or waiting for the
    process that trains it) when this checkout does not hold it."""
    weights = root / "classification" / run.name / "model_best.pth"
    while not ((record := recorded(run, ledger)) and weights.is_file()):
        with claimed(root / "locks" / f"{run.name}.lock") as mine:
            if mine and not ((record := recorded(run, ledger)) and weights.is_file()):
                trained = train_and_record(run, root, ledger, threads)
                if record and record["weights_sha256"] != trained["weights_sha256"]:
                    save_json(record, ledger / f"{run.name}.json")  # the ledger's runs used the old one
                    sys.exit(f"the retrained backbone {weights} differs from the one the ledger's runs used "
                             f"(SHA-256 {record['weights_sha256'][:12]}); give --ledger a new folder")
        if not mine:
            time.sleep(WAIT_SECONDS)
    if sha256(weights) != record["weights_sha256"]:
        sys.exit(f"{weights} is not the backbone the ledger's runs used; give --ledger a new folder "
                 "or remove that file to retrain it")
    return weights, record["weights_sha256"]


def table(records: dict[tuple, list[dict]], seeds: int) -> str:
    def show(values):
        return f"{statistics.mean(values):.1f}" + (f" ± {statistics.stdev(values):.1f}" if len(values) > 1 else "")
    lines = ["| recipe | method | best top-1 (%) | final top-1 (%) | final top-1 of the EMA (%) | best is the EMA "
             "| CPU s / epoch | seeds |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for (recipe, method), rows in records.items():
        if not rows:
            continue
        with_ema = [r for r in rows if "ema_weights" in r["best"]]
        ema = f"{sum(int(r['best']['ema_weights']) for r in with_ema)} of {len(with_ema)}" if with_ema else "no EMA"
        ema_final = show([r["final"]["val_top1_ema"] for r in with_ema]) if with_ema else ""
        lines.append(f"| {recipe} | {method} | {show([r['best']['val_top1'] for r in rows])} "
                     f"| {show([r['final']['val_top1'] for r in rows])} | {ema_final} | {ema} "
                     f"| {statistics.mean(r['cpu_seconds_per_epoch'] for r in rows):.0f} | {len(rows)} of {seeds} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--pretrain-epochs", type=int, default=5)
    p.add_argument("--size", type=int, default=32, help="input size of pretraining and fine-tuning")
    p.add_argument("--amp", default="auto", choices=("none", "bf16", "auto"),
                   help="AMP of every run (auto: bf16 where the CPU or GPU computes it natively)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--out", default="output/transfer_recipes")
    p.add_argument("--ledger", type=Path, default=None,
                   help=f"records of finished runs (default {LEDGER.relative_to(REPO)}/pre<P>_px<S>_e<E>_amp-<AMP>)")
    p.add_argument("--report", action="store_true", help="print the table of the recorded runs; train nothing")
    args = p.parse_args()
    setting = f"pre{args.pretrain_epochs}_px{args.size}"
    root = Path(args.out).resolve() / setting
    ledger = (args.ledger or LEDGER / f"{setting}_e{args.epochs}_amp-{args.amp}").resolve()
    ledger.mkdir(parents=True, exist_ok=True)
    data = Path(os.environ.get("BSAM_DATA", REPO / ".." / "shared" / "data")).resolve()
    os.environ["HF_HUB_OFFLINE"] = "1"
    common = ("OUTPUT_DIR", root, "WORKERS", args.workers, "MODEL.NAME", "timm/resnet18", "DATASET.IMAGE_SIZE", args.size,
              "AMP", args.amp)
    backbone = Run("backbone", REPO / "configs" / "cls_cifar10_sgd.yaml",
                   (*common, "NAME", "backbone", "DATASET.ROOT", data / "cifar10_subset",
                    "DATASET.FORMAT", "imagefolder", "TRAIN.END_EPOCH", args.pretrain_epochs))

    def fine_tunes(weights: Path | str) -> list[Run]:
        return [Run(f"{family}_{method}_e{args.epochs}_seed{seed}", REPO / "configs" / f"{family}_{method}.yaml",
                    (*common, "NAME", f"{family}_{method}_e{args.epochs}_seed{seed}", "SEED", seed,
                     "DATASET.ROOT", data / "flowers5", "MODEL.PRETRAINED", weights, "TRAIN.END_EPOCH", args.epochs),
                    recipe, method)
                for seed in args.seeds for recipe, family in RECIPES.items() for method in METHODS]

    runs = fine_tunes("")
    done = {run.name: record for run in runs if (record := recorded(run, ledger))}
    if not args.report and len(done) < len(runs):
        weights, digest = backbone_weights(backbone, root, ledger, args.threads)
        for run in fine_tunes(weights):
            if run.name in done:
                continue
            with claimed(root / "locks" / f"{run.name}.lock") as mine:
                if mine and not (record := recorded(run, ledger)):
                    print(f"training {run.name}", flush=True)
                    record = train_and_record(run, root, ledger, args.threads, backbone_sha256=digest)
                if record := recorded(run, ledger):
                    done[run.name] = record
    pretrained = recorded(backbone, ledger)
    if pretrained:
        print(f"backbone: timm/resnet18 on cifar10_subset, {args.pretrain_epochs} epochs SGD, "
              f"test top-1 {pretrained['best']['val_top1']:.1f}\n")
    by_row = {(recipe, method): [done[r.name] for r in runs if (r.recipe, r.method) == (recipe, method) and r.name in done]
              for recipe in RECIPES for method in METHODS}
    print(table(by_row, len(args.seeds)))
    if len(done) < len(runs):
        print(f"\n{len(runs) - len(done)} of {len(runs)} runs not recorded yet (trained by another process, "
              "or to come): run the command again", flush=True)


if __name__ == "__main__":
    main()
