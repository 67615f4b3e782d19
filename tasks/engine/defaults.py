"""Defaults shared by every task, in the SimpleBaseline/HRNet UPPER_CASE style.

A key that appears nowhere in these defaults (or in a task's ``Task.defaults``) is an
error in a user's YAML.  A default of ``None`` accepts any value; otherwise a value must
have the default's type (an int is accepted where a float is expected).  The HRNet keys
that the suite does not use (``GPUS``, ``LOG_DIR`` ...) are accepted so that their
experiment files load unchanged.
"""

BASE = {
    "TASK": "classification",
    "CUSTOM_IMPORTS": [],  # modules imported before TASK is looked up: tasks of one's own
    "NAME": "",  # run name; empty -> the config file's stem
    "OUTPUT_DIR": "output",
    "LOG_DIR": None,  # HRNet key, unused (logs go to the run directory)
    "DATA_DIR": "",  # HRNet key, unused
    "GPUS": None,  # HRNet key (a list or "(0,1,2,3)"); devices come from torchrun (a hint if N > 1)
    "WORKERS": 2,
    "PRINT_FREQ": 20,
    "AUTO_RESUME": False,
    "PIN_MEMORY": True,
    "PERSISTENT_WORKERS": False,  # keep loader workers between epochs (resumes then augment differently)
    "RANK": 0,  # HRNet key, unused (torchrun sets the rank)
    "SEED": 0,
    "DETERMINISTIC": False,
    "DEVICE": "auto",  # auto | cpu | cuda
    "AMP": "none",  # none | bf16 | fp16 (fp16: CUDA only, with a GradScaler) | auto (bf16 where native)
    "CHANNELS_LAST": False,  # NHWC model and images (faster convolutions on tensor cores)
    "COMPILE": "none",  # none | inductor | aot_eager | eager: torch.compile backend of the model
    "CUDNN": {"BENCHMARK": True, "DETERMINISTIC": False, "ENABLED": True},
    "DATASET": {
        "DATASET": "",
        "ROOT": "",
        "TRAIN_SET": "train",
        "TEST_SET": "test",
        "DATA_FORMAT": "jpg",
    },
    "MODEL": {
        "NAME": "",
        "PRETRAINED": "",
        "INIT_WEIGHTS": True,
        "NUM_CLASSES": 10,
        "SYNC_BN": False,  # batch-norm statistics over all ranks (small per-GPU batches; CUDA)
    },
    "LOSS": {},
    "TRAIN": {
        "BATCH_SIZE_PER_GPU": 32,
        "SHUFFLE": True,
        "BEGIN_EPOCH": 0,
        "END_EPOCH": 1,
        "MAX_ITERS_PER_EPOCH": 0,  # 0 = the whole epoch; >0 caps it (smoke runs, tests)
        "OPTIMIZER": "sgd",  # sgd | adam | adamw
        "LR": 0.1,
        "LR_SCHEDULER": "multistep",  # multistep | cosine | constant
        "LR_FACTOR": 0.1,
        "LR_STEP": [90, 120],
        "LR_END": 0.0,  # final LR of the cosine schedule
        "WARMUP_EPOCHS": 0.0,
        "MOMENTUM": 0.9,
        "NESTEROV": False,
        "WD": 0.0,  # sgd and adamw; adam has none, as in the reference (Adam(params, lr))
        "BETAS": [0.9, 0.999],  # adam / adamw
        "GAMMA1": None,  # HRNet key, not applied (the reference's Adam ignores it too)
        "GAMMA2": None,  # HRNet key, not applied
        "CLIP_GRAD_NORM": 0.0,  # 0 = no clipping
        "FUSED_OPTIMIZER": False,  # torch's fused kernel of the base optimizer (about 1 ulp from the default)
        "EVAL_EVERY": 1,  # epochs between evaluations
        "MAX_NONFINITE_STEPS": 10,  # stop the run after this many non-finite steps in a row
        "CHECKPOINT": "",  # HRNet key, unused (use --resume)
        "RESUME": False,
    },
    "SAM": {
        "METHOD": "none",  # none | sam | asam | bsam
        "RHO": 0.05,
        "RHO_MIN": 0.05,
        "RHO_MIN_END": None,  # None: constant RHO_MIN; a float: RHO_MIN follows the LR to it
        "ADAPTIVE": False,  # ASAM-style element-wise scaling (asam implies it)
        "REFERENCE_COMPAT": False,  # reproduce the authors' code (step from w - e_min)
        "RHO_WARMUP_EPOCHS": 0.0,  # rho and rho_min ramp from 0 over these epochs
        "INTERVAL": 1,  # k: the full sharpness-aware step on one step in k, a one-pass step between
        "REUSE": "none",  # between full steps: none (plain g0) | look (LookSAM's reused direction)
        "REUSE_ALPHA": 0.7,  # LookSAM's alpha: weight of the held direction (REUSE look)
    },
    "TEST": {
        "BATCH_SIZE_PER_GPU": 64,
        "MODEL_FILE": "",
    },
    "DEBUG": {"DEBUG": False},
}

#: Older spellings (Microsoft's first SimpleBaseline release), read as the keys used here.
#: Its BATCH_SIZE is per GPU too (its loaders multiply it by the number of GPUs).
RENAMED = {"TRAIN.BATCH_SIZE": "TRAIN.BATCH_SIZE_PER_GPU", "TEST.BATCH_SIZE": "TEST.BATCH_SIZE_PER_GPU"}

#: Allowed values for base keys (dotted name -> choices, or (predicate, description)).
CHECKS = {
    "DEVICE": ["auto", "cpu", "cuda"],
    "AMP": ["none", "bf16", "fp16", "auto"],
    "COMPILE": ["none", "inductor", "aot_eager", "eager"],
    "TRAIN.OPTIMIZER": ["sgd", "adam", "adamw"],
    "TRAIN.LR_SCHEDULER": ["multistep", "cosine", "constant"],
    "SAM.METHOD": ["none", "sam", "asam", "bsam"],
    "WORKERS": (lambda v: v >= 0, "an integer >= 0"),
    "TRAIN.BATCH_SIZE_PER_GPU": (lambda v: v >= 1, "an integer >= 1"),
    "TEST.BATCH_SIZE_PER_GPU": (lambda v: v >= 1, "an integer >= 1"),
    "TRAIN.END_EPOCH": (lambda v: v >= 1, "an integer >= 1"),
    "TRAIN.LR": (lambda v: v >= 0, "a number >= 0"),
    "TRAIN.WD": (lambda v: v >= 0, "a number >= 0"),
    "SAM.RHO": (lambda v: v >= 0, "a number >= 0"),
    "SAM.RHO_MIN": (lambda v: v >= 0, "a number >= 0"),
    "PRINT_FREQ": (lambda v: v >= 1, "an integer >= 1"),
    "TRAIN.EVAL_EVERY": (lambda v: v >= 1, "an integer >= 1"),
    "TRAIN.MAX_ITERS_PER_EPOCH": (lambda v: v >= 0, "an integer >= 0 (0 = the whole epoch)"),
    "TRAIN.MAX_NONFINITE_STEPS": (lambda v: v >= 1, "an integer >= 1"),
    "TRAIN.LR_FACTOR": (lambda v: v > 0, "a number > 0"),
    "SAM.RHO_WARMUP_EPOCHS": (lambda v: v >= 0, "a number >= 0"),
    "SAM.INTERVAL": (lambda v: v >= 1, "an integer >= 1 (1: every step is a full step)"),
    "SAM.REUSE": ["none", "look"],
    "SAM.REUSE_ALPHA": (lambda v: v >= 0, "a number >= 0"),
    "TRAIN.BETAS": (lambda v: len(v) == 2 and all(isinstance(b, (int, float)) and 0 <= b < 1 for b in v),
                    "a list [beta1, beta2] of two numbers in [0, 1)"),
}

#: The type of each key whose default is ``None`` (it takes null or a value of this type;
#: a tuple lists the types allowed).  Tasks add theirs in ``Task.nullable``.
NULLABLE = {
    "GPUS": (list, str, int),
    "SAM.RHO_MIN_END": float,
    "LOG_DIR": str,
    "TRAIN.GAMMA1": (int, float),  # HRNet's Adam betas: accepted, not applied (TRAIN.BETAS)
    "TRAIN.GAMMA2": (int, float),
}

#: Keys of SimpleBaseline/HRNet experiment files that this tool applies differently or not
#: at all (dotted name or section prefix -> what happens instead).  A run lists those its
#: config sets (to a value other than the default) in one line at start.
REFERENCE_KEYS = {
    "GPUS": "devices come from DEVICE and torchrun",
    "LOG_DIR": "logs go to the run directory",
    "DATA_DIR": "not used",
    "RANK": "torchrun sets the rank",
    "CUDNN.DETERMINISTIC": "use DETERMINISTIC: true",
    "CUDNN.ENABLED": "not used",
    "TRAIN.GAMMA1": "not applied: Adam betas come from TRAIN.BETAS",
    "TRAIN.GAMMA2": "not applied: Adam betas come from TRAIN.BETAS",
    "TRAIN.CHECKPOINT": "use --resume",
    "TEST.MODEL_FILE": "use --checkpoint",
    "DEBUG.": "debug pictures are not written; the run draws NUM_DRAW pose pictures",
}
