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

The converged preset also trains the cheap variants (SAM.INTERVAL 5: BSAM look, BSAM every-k,
SAM look = LookSAM) beside SGD trained for as many passes (epochs x passes per step: 210 for
BSAM k=5's 1.4, 180 for SAM k=5's 1.2), three seeds each.  ``--tuned`` adds SAM and BSAM at
the rho (and rho_min) a sweep chose on a 10% validation split of the training images
(``tools/sweep.py``, ``--tune-trials`` trials each), trained like the other rows:

    python benchmarks/reproduce_cifar.py --preset converged --tuned --dry-run   # sweeps, rows, time

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
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the benchmark's modules (benchmarks/reproduction) and tools/

from benchmarks.reproduction.bench import run  # noqa: E402
from benchmarks.reproduction.plan import BASE_CONFIG, DEFAULT_DATA, METHODS, PAPER, PRESETS, TUNED, VARIANTS  # noqa: E402


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
    p.add_argument("--methods", nargs="+", choices=[m for m in METHODS if m not in TUNED],
                   default=[*PAPER, *VARIANTS], help="default: the paper's four and the cheap variants")
    p.add_argument("--noise", type=float, help="label-noise rate of the noisy runs (0: skip them; "
                   "default: the preset's)")
    p.add_argument("--noise-seeds", type=int, nargs="+", help="seeds of the noisy runs (default: the preset's)")
    p.add_argument("--compute-seeds", type=int, nargs="*",
                   help="seeds of the equal-compute runs (SGD 3x, SAM 1.5x the epochs; default: the preset's)")
    p.add_argument("--variant-seeds", type=int, nargs="*",
                   help="seeds of the cheap variants and of SGD at their compute (default: the preset's)")
    p.add_argument("--tuned", action="store_true", help="also sweep SAM's rho and BSAM's rho and rho_min on a "
                   "validation split, then train them at the chosen values (rows sam_tuned, bsam_tuned)")
    p.add_argument("--tune-trials", type=int, default=8, help="trials of each sweep (default 8)")
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
    args = p.parse_args(argv)
    args.methods = [*args.methods, *(TUNED if args.tuned else ())]
    return args


def main(argv=None) -> int:
    return run(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
