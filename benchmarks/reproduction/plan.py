"""Which runs the benchmark trains: methods, presets, jobs, the recipe and the commands."""
from __future__ import annotations

import os
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "cifar10_subset"
BASE_CONFIG = REPO / "configs" / "demo" / "cls_cifar10_subset_tiny.yaml"

_BSAM = ["SAM.METHOD", "bsam", "SAM.RHO", "0.05", "SAM.RHO_MIN", "0.05", "SAM.RHO_MIN_END", "0.0"]
#: The sharpness-aware part of each method (the paper's CIFAR settings: rho 0.05, rho_min
#: 0.05 -> 0 following the cosine LR); the cheap variants run the full step one step in 5.
METHODS = {
    "sgd": ["SAM.METHOD", "none"],
    "sam": ["SAM.METHOD", "sam", "SAM.RHO", "0.05"],
    "bsam": [*_BSAM, "SAM.REFERENCE_COMPAT", "false"],
    "bsam_ref": [*_BSAM, "SAM.REFERENCE_COMPAT", "true"],
    "sam_look5": ["SAM.METHOD", "sam", "SAM.RHO", "0.05", "SAM.INTERVAL", "5", "SAM.REUSE", "look",
                  "SAM.REUSE_ALPHA", "0.7"],
    "bsam_look5": [*_BSAM, "SAM.REFERENCE_COMPAT", "false", "SAM.INTERVAL", "5", "SAM.REUSE", "look",
                   "SAM.REUSE_ALPHA", "0.7"],
    "bsam_every5": [*_BSAM, "SAM.REFERENCE_COMPAT", "false", "SAM.INTERVAL", "5", "SAM.REUSE", "none"],
    # rho (and rho_min) chosen by a sweep on a validation split (see tuning.py)
    "sam_tuned": ["SAM.METHOD", "sam"],
    "bsam_tuned": ["SAM.METHOD", "bsam", "SAM.RHO_MIN_END", "0.0", "SAM.REFERENCE_COMPAT", "false"],
}
LABELS = {"sgd": "SGD", "sam": "SAM", "bsam": "BSAM", "bsam_ref": "BSAM (reference-code mode)",
          "sam_look5": "SAM look k=5 (LookSAM)", "bsam_look5": "BSAM look k=5", "bsam_every5": "BSAM every-k k=5",
          "sam_tuned": "SAM, tuned rho", "bsam_tuned": "BSAM, tuned rho and rho_min"}
#: Forward-backward passes per step: 1 + (passes of the full step - 1) / k for the variants.
PASSES = {"sgd": 1.0, "sam": 2.0, "bsam": 3.0, "bsam_ref": 3.0, "sam_look5": 1.2, "bsam_look5": 1.4,
          "bsam_every5": 1.4, "sam_tuned": 2.0, "bsam_tuned": 3.0}
#: Whose compute a row at ``passes`` passes per step matches (the equal-compute rows' labels).
COMPUTE_OF = {3.0: "BSAM's", 1.4: "BSAM k=5's", 1.2: "SAM look k=5's"}
#: Time per epoch relative to SGD, for estimates before a run has measured its own
#: (the README's measurements: 3 and 2 forward-backward passes, minus shared data loading).
COST = {"sgd": 1.0, "sam": 1.9, "bsam": 2.75, "bsam_ref": 2.6, "sam_look5": 1.2, "bsam_look5": 1.4,
        "bsam_every5": 1.4, "sam_tuned": 1.9, "bsam_tuned": 2.75}
#: Equal-compute rows: a method trained for this many times the epochs matches BSAM's cost.
EQUAL_COMPUTE = {"sgd": 3.0, "sam": 1.5}
#: The paper's four methods, the cheap variants (each beside SGD trained for as many passes:
#: its epochs x passes per step) and the methods whose rho a sweep chooses.
PAPER = ("sgd", "sam", "bsam", "bsam_ref")
VARIANTS = ("bsam_look5", "bsam_every5", "sam_look5")
TUNED = ("sam_tuned", "bsam_tuned")


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
    variant_seeds: list[int] = field(default_factory=list)  # cheap variants and SGD at their compute
    eval_every: int = 0  # epochs between test evaluations (0: only at the end)
    epoch_seconds: float = 20.0  # a guess of one SGD epoch, until a run has measured it
    check_fp32: bool = False  # one SGD run without bf16, to check that bf16 changes nothing


PRESETS = {
    # 100 images per class for 150 epochs: SGD ends above 95% train accuracy (250 per class for
    # 60 epochs, the same number of steps, left it at 84%), in about 5 h for every row.
    "converged": Preset(model="cifar_resnet20", epochs=150, workers=0, per_class=100, amp="bf16",
                        noise=0.4, noise_seeds=[0], noise_methods=("sgd", "sam", "bsam"),
                        compute_seeds=[0, 1, 2], variant_seeds=[0, 1, 2], eval_every=5, epoch_seconds=3.2,
                        check_fp32=True),
    "cpu": Preset(model="cifar_resnet20", epochs=10, workers=2, epoch_seconds=17.3),
    "paper": Preset(model="cifar_resnet18", epochs=200, workers=4, epoch_seconds=15.0),
}


@dataclass(frozen=True)
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

    @property
    def passes(self) -> float:
        """Forward-backward passes per step x the budget: the run's compute relative to an
        SGD run of the preset's epochs."""
        return PASSES[self.method] * self.mult

    def label(self, epochs: int) -> str:
        text = LABELS[self.method]
        if self.mult != 1:
            text += f", {round(epochs * self.mult)} epochs ({COMPUTE_OF[round(self.passes, 2)]} compute)"
        if self.amp != "default":
            text += f", {self.amp} check"
        return text


def plan_jobs(preset: Preset, args) -> list[Job]:
    """Every run, most informative first: seed 0 of each method, the noisy runs, the
    equal-compute runs, the other seeds, then the cheap variants with SGD at their compute
    (a partial benchmark is already a comparison)."""
    seeds, methods = args.seeds, [m for m in args.methods if m in PAPER]
    noise_seeds = args.noise_seeds if args.noise_seeds is not None else (preset.noise_seeds or seeds)
    compute_seeds = _seeds(args.compute_seeds, preset.compute_seeds, seeds)
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
    jobs += variant_jobs(preset, args)
    jobs += [Job(m, 1, 0.0, s, "default") for s in seeds for m in args.methods if m in TUNED]
    unique = {}
    for job in jobs:
        unique.setdefault(job.name, job)
    return list(unique.values())


def variant_jobs(preset: Preset, args) -> list[Job]:
    """The cheap variants and SGD at each one's passes per step (seed by seed)."""
    seeds = _seeds(args.variant_seeds, preset.variant_seeds, args.seeds)
    chosen = [m for m in VARIANTS if m in args.methods]
    jobs = []
    for seed in seeds:
        for method in chosen:
            jobs.append(Job(method, 1, 0.0, seed, "default"))
            if "sgd" in args.methods:
                jobs.append(Job("sgd", PASSES[method], 0.0, seed, "default"))
    return jobs


def _seeds(given: list[int] | None, preset: list[int], seeds: list[int]) -> list[int]:
    """The seeds of an extra set of rows: as given, else the preset's among ``--seeds``."""
    return given if given is not None else [s for s in preset if s in seeds]


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


def job_opts(job: Job, preset: Preset, epochs: int, tuned: dict[str, list[str]] | None = None) -> list[str]:
    """What one run adds to the recipe (the table's row and the seed); ``tuned``: the values
    a sweep chose for a tuned method."""
    opts = [*METHODS[job.method], *(tuned or {}).get(job.method, []), "DATASET.LABEL_NOISE", str(job.noise)]
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


def quoted(words: list[str]) -> str:
    return " ".join(shlex.quote(w) for w in words)


def train_command(cfg: Path, opts: list[str], resume: bool = False) -> list[str]:
    return [sys.executable, "tools/train.py", "--cfg", short(cfg), *(["--resume"] if resume else []),
            "--opts", *opts]


def same_recipe(a: list[str], b: list[str]) -> bool:
    """Whether two runs' options train the same thing.  Where their folders are does not
    count, nor where the checkout and the data live: the data folder is compared by its
    name (``../shared/data/cifar10_subset`` from /work/main is ``/work/shared/data/...`` seen
    from another checkout)."""
    def key(opts: list[str]) -> dict[str, str]:
        pairs = {k: v for k, v in zip(opts[::2], opts[1::2]) if k != "OUTPUT_DIR"}
        if "DATASET.ROOT" in pairs:
            pairs["DATASET.ROOT"] = Path(os.path.normpath(pairs["DATASET.ROOT"])).name
        return pairs
    return key(a) == key(b)


def shown_command(cfg: Path, opts: list[str]) -> str:
    """A run's command as the README shows it: the shared recipe is ``"${RECIPE[@]}"``."""
    return f'python tools/train.py --cfg {shlex.quote(short(cfg))} --opts "${{RECIPE[@]}}" {quoted(opts)}'
