"""Sharpness-aware optimizers behind one ``step(closure)`` API.

``BSAM`` (three passes), ``SAM``/``ASAM`` (two passes) wrap any ``torch.optim`` optimizer;
``build`` makes one from names; ``run_step`` runs one step of any optimizer from a pass
function (with or without a ``GradScaler``); ``frozen_bn_stats`` keeps batch-norm running
statistics still during perturbed passes of a hand-written loop.
"""
from .bn import frozen_bn_stats
from .bsam import BSAM, current_rho_min
from .factory import BASE_OPTIMIZERS, METHODS, build
from .sam import ASAM, SAM
from .cycle import REUSE_RULES
from .sharpness import SharpnessAwareOptimizer, run_step

__all__ = ["ASAM", "BASE_OPTIMIZERS", "BSAM", "METHODS", "REUSE_RULES", "SAM",
           "SharpnessAwareOptimizer", "build", "current_rho_min", "frozen_bn_stats", "run_step"]
