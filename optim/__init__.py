"""Sharpness-aware optimizers behind one ``step(closure)`` API.

``BSAM`` (three passes), ``SAM``/``ASAM`` (two passes) wrap any ``torch.optim`` optimizer;
``build`` makes one from names; ``frozen_bn_stats`` keeps batch-norm running statistics
still during perturbed passes of a hand-written loop.
"""
from .bn import frozen_bn_stats
from .bsam import BSAM, current_rho_min
from .factory import BASE_OPTIMIZERS, METHODS, build
from .sam import ASAM, SAM
from .sharpness import SharpnessAwareOptimizer

__all__ = ["ASAM", "BASE_OPTIMIZERS", "BSAM", "METHODS", "SAM", "SharpnessAwareOptimizer",
           "build", "current_rho_min", "frozen_bn_stats"]
