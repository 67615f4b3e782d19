"""Today's fine-tuning recipe against the timm/torchvision-style one, for SGD, SAM and BSAM.

One backbone (a timm ResNet-18 trained here on the CIFAR-10 subset, so that nothing is
downloaded) is fine-tuned on flowers5 with ``configs/transfer_flowers_*`` (today's recipe:
crop and flip, label smoothing, backbone LR x 0.1) and with ``configs/transfer_timm_*`` (EMA,
RandAugment, random erasing, mixup/cutmix, layer decay, no WD on norm/bias), both at the
same input size, epochs and seeds.  Runs go one at a time through ``tools/train.py``; a
finished run (its folder names the backbone's epochs, the input size and the epochs) is
read back, not repeated.  Prints a markdown table: best and final top-1 of
the test split (best = what model_best.pth holds: the better of raw and EMA for the new
recipe), train seconds per epoch.

    python benchmarks/transfer_recipes.py --seeds 0 1 2 --epochs 30 [--size 32] [--out output/transfer_recipes]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RECIPES = {"today": "transfer_flowers", "timm-style": "transfer_timm"}
METHODS = ("sgd", "sam", "bsam")


def train(cfg: Path, opts: list, threads: int) -> dict:
    """``results.json`` of the run, training it first unless it is finished already."""
    args = dict(zip(opts[::2], opts[1::2]))
    results = Path(args["OUTPUT_DIR"]) / "classification" / args["NAME"] / "results.json"
    if not results.is_file():
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1"}
        subprocess.run([sys.executable, "tools/train.py", "--cfg", str(cfg), "--overwrite", "--opts",
                        *map(str, opts)], cwd=REPO, env=env, check=True, stdout=subprocess.DEVNULL)
    return json.loads(results.read_text())


def epoch_seconds(run_dir: Path) -> float:
    import csv

    with open(run_dir / "metrics.csv") as f:
        return statistics.mean(float(r["train_seconds"]) for r in csv.DictReader(f))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--pretrain-epochs", type=int, default=5)
    p.add_argument("--size", type=int, default=32, help="input size of pretraining and fine-tuning")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--out", default="output/transfer_recipes")
    args = p.parse_args()
    out = Path(args.out).resolve() / f"pre{args.pretrain_epochs}_px{args.size}"
    data = (REPO / ".." / "shared" / "data").resolve()
    data = Path(os.environ.get("BSAM_DATA", data))
    common = ["OUTPUT_DIR", out, "WORKERS", args.workers, "MODEL.NAME", "timm/resnet18",
              "DATASET.IMAGE_SIZE", args.size]
    backbone = train(REPO / "configs" / "cls_cifar10_sgd.yaml",
                     [*common, "NAME", "backbone", "DATASET.ROOT", data / "cifar10_subset",
                      "DATASET.FORMAT", "imagefolder", "TRAIN.END_EPOCH", args.pretrain_epochs], args.threads)
    weights = Path(backbone["run_dir"]) / "model_best.pth"
    print(f"backbone: timm/resnet18 on cifar10_subset, {args.pretrain_epochs} epochs SGD, "
          f"test top-1 {backbone['best']['val_top1']:.1f}\n")
    print("| recipe | method | best top-1 | final top-1 | s / epoch | runs |")
    print("|---|---|---|---|---|---|")
    for recipe, family in RECIPES.items():
        for method in METHODS:
            best, final, seconds = [], [], []
            for seed in args.seeds:
                res = train(REPO / "configs" / f"{family}_{method}.yaml",
                            [*common, "NAME", f"{family}_{method}_e{args.epochs}_seed{seed}", "SEED", seed,
                             "DATASET.ROOT", data / "flowers5", "MODEL.PRETRAINED", weights,
                             "TRAIN.END_EPOCH", args.epochs], args.threads)
                best.append(res["best"]["val_top1"])
                final.append(res["final"]["val_top1"])
                seconds.append(epoch_seconds(Path(res["run_dir"])))
            show = lambda v: f"{statistics.mean(v):.1f}" + (f" ± {statistics.stdev(v):.1f}" if len(v) > 1 else "")  # noqa: E731
            print(f"| {recipe} | {method} | {show(best)} | {show(final)} | {statistics.mean(seconds):.0f} "
                  f"| {len(args.seeds)} |", flush=True)


if __name__ == "__main__":
    main()
