"""The config keys every task shares, one :class:`~tasks.engine.schema.Key` record each, in the
SimpleBaseline/HRNet UPPER_CASE style (docs/config.md says how to add one).

The HRNet keys the suite does not use (``GPUS``, ``LOG_DIR`` ...) are declared so that their
experiment files load unchanged; their ``reference`` note is listed at start when a file sets
them.  A task adds its keys in ``Task.schema``.
"""
from optim.factory import BASE_OPTIMIZERS, METHODS

from .schema import Key

_AT_LEAST_ONE = dict(ge=1)
_NOT_NEGATIVE = dict(ge=0)
#: The seeds that NumPy's and PyTorch's generators all take (a task's seed keys use it too).
SEED_RANGE = dict(ge=0, le=2**32 - 1)

#: DEBUG pictures of the reference are not drawn; any key of the section says so at start.
DEBUG_PICTURES = Key(False, run_only=True,
                     reference="debug pictures are not written; the run draws NUM_DRAW pose pictures")

ENGINE = {
    "TASK": Key("classification"),
    "CUSTOM_IMPORTS": Key([], type=list[str]),  # modules imported before TASK is looked up: tasks of one's own
    "NAME": Key("", run_only=True),  # run name; empty -> the config file's stem
    "OUTPUT_DIR": Key("output", run_only=True),
    "LOG_DIR": Key(None, type=str, run_only=True, reference="logs go to the run directory"),
    "DATA_DIR": Key("", run_only=True, reference="not used"),
    # devices come from torchrun (a hint if GPUS lists more than the run has); HRNet writes "(0,1,2,3)"
    "GPUS": Key(None, type=(list[int], str, int), run_only=True,
                reference="devices come from DEVICE and torchrun"),
    "WORKERS": Key(2, **_NOT_NEGATIVE, run_only=True),
    "PRINT_FREQ": Key(20, **_AT_LEAST_ONE, run_only=True),
    "AUTO_RESUME": Key(False, run_only=True),
    "PIN_MEMORY": Key(True, run_only=True),
    "PERSISTENT_WORKERS": Key(False),  # keep loader workers between epochs (resumes then augment differently)
    "RANK": Key(0, **_NOT_NEGATIVE, run_only=True, reference="torchrun sets the rank"),
    "SEED": Key(0, **SEED_RANGE),
    "DETERMINISTIC": Key(False),
    "DEVICE": Key("auto", choices=("auto", "cpu", "cuda"), run_only=True),
    # fp16: CUDA only, with a GradScaler; auto: bf16 where native
    "AMP": Key("none", choices=("none", "bf16", "fp16", "auto")),
    "CHANNELS_LAST": Key(False),  # NHWC model and images (faster convolutions on tensor cores)
    "COMPILE": Key("none", choices=("none", "inductor", "aot_eager", "eager")),  # torch.compile backend
    "CUDNN": {
        "BENCHMARK": Key(True, run_only=True),
        "DETERMINISTIC": Key(False, reference="use DETERMINISTIC: true"),
        "ENABLED": Key(True, reference="not used"),
    },
    "DATASET": {
        "DATASET": Key(""),
        "ROOT": Key(""),
        "TRAIN_SET": Key("train"),
        "TEST_SET": Key("test"),
        "DATA_FORMAT": Key("jpg"),
    },
    "MODEL": {
        "NAME": Key(""),
        "PRETRAINED": Key(""),
        "INIT_WEIGHTS": Key(True),
        "NUM_CLASSES": Key(10, **_AT_LEAST_ONE),
        "SYNC_BN": Key(False),  # batch-norm statistics over all ranks (small per-GPU batches; CUDA)
    },
    "LOSS": {},
    "TRAIN": {
        # the first SimpleBaseline release's BATCH_SIZE is per GPU too (its loaders multiply it)
        "BATCH_SIZE_PER_GPU": Key(32, **_AT_LEAST_ONE, old=("BATCH_SIZE",)),
        # one optimizer step per this many micro-batches of BATCH_SIZE_PER_GPU (gradients summed;
        # SAM/BSAM sweep all of them in every pass); epochs, LR schedule and logs count optimizer steps
        "ACCUMULATE_STEPS": Key(1, **_AT_LEAST_ONE),
        "SHUFFLE": Key(True),
        "BEGIN_EPOCH": Key(0, **_NOT_NEGATIVE),
        "END_EPOCH": Key(1, **_AT_LEAST_ONE, above=("TRAIN.BEGIN_EPOCH", "no epoch would train")),
        "MAX_ITERS_PER_EPOCH": Key(0, **_NOT_NEGATIVE, hint="0 = the whole epoch"),  # >0 caps it (smoke runs)
        "OPTIMIZER": Key("sgd", choices=tuple(BASE_OPTIMIZERS)),
        "LR": Key(0.1, **_NOT_NEGATIVE),
        "LR_SCHEDULER": Key("multistep", choices=("multistep", "cosine", "constant")),
        "LR_FACTOR": Key(0.1, gt=0),
        "LR_STEP": Key([90, 120], type=list[float], **_NOT_NEGATIVE, hint="epochs"),
        "LR_END": Key(0.0, **_NOT_NEGATIVE),  # final LR of the cosine schedule
        "WARMUP_EPOCHS": Key(0.0, **_NOT_NEGATIVE),
        "MOMENTUM": Key(0.9, ge=0, lt=1),
        "NESTEROV": Key(False),
        "WD": Key(0.0, **_NOT_NEGATIVE),  # sgd and adamw; adam has none, as in the reference (Adam(params, lr))
        "BETAS": Key([0.9, 0.999], length=(2,), ge=0, lt=1, hint="[beta1, beta2]"),  # adam / adamw
        "GAMMA1": Key(None, type=(int, float), reference="not applied: Adam betas come from TRAIN.BETAS"),
        "GAMMA2": Key(None, type=(int, float), reference="not applied: Adam betas come from TRAIN.BETAS"),
        "CLIP_GRAD_NORM": Key(0.0, **_NOT_NEGATIVE, hint="0 = no clipping"),
        # torch's fused kernel of the base optimizer (its rounding differs by about 1 ulp)
        "FUSED_OPTIMIZER": Key(False),
        "EVAL_EVERY": Key(1, **_AT_LEAST_ONE),  # epochs between evaluations
        # an EMA of the weights, evaluated beside them, the better one kept (engine/ema.py)
        "EMA_DECAY": Key(0.0, ge=0, lt=1, hint="0 = no weight average"),
        # stop the run after this many non-finite steps in a row
        "MAX_NONFINITE_STEPS": Key(10, **_AT_LEAST_ONE, run_only=True),
        "CHECKPOINT": Key("", run_only=True, reference="use --resume"),
        "RESUME": Key(False, run_only=True),
    },
    "SAM": {
        "METHOD": Key("none", choices=METHODS),
        "RHO": Key(0.05, **_NOT_NEGATIVE),
        "RHO_MIN": Key(0.05, **_NOT_NEGATIVE),
        # null: constant RHO_MIN; a number: RHO_MIN follows the LR to it
        "RHO_MIN_END": Key(None, type=float, **_NOT_NEGATIVE),
        "ADAPTIVE": Key(False),  # ASAM-style element-wise scaling (asam implies it)
        "REFERENCE_COMPAT": Key(False),  # reproduce the authors' code (step from w - e_min)
        "RHO_WARMUP_EPOCHS": Key(0.0, **_NOT_NEGATIVE),  # rho and rho_min ramp from 0 over these epochs
        # k: the full sharpness-aware step on one step in k, a one-pass step between
        "INTERVAL": Key(1, **_AT_LEAST_ONE, hint="1: every step is a full step"),
        # between full steps: none (plain g0) | look (LookSAM's reused direction)
        "REUSE": Key("none", choices=("none", "look")),
        "REUSE_ALPHA": Key(0.7, **_NOT_NEGATIVE),  # LookSAM's alpha: weight of the held direction (REUSE look)
        # whose gradient perturbs: global (the whole step's batch) | local (each process's own
        # micro-batch: no gradient sync in the perturbed passes, one all-reduce of the direction)
        "PERTURB": Key("global", choices=("global", "local")),
    },
    "TEST": {
        "BATCH_SIZE_PER_GPU": Key(64, **_AT_LEAST_ONE, old=("BATCH_SIZE",)),
        "MODEL_FILE": Key("", run_only=True, reference="use --checkpoint"),
    },
    "DEBUG": {"DEBUG": DEBUG_PICTURES},
}
