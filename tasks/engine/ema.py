"""``TRAIN.EMA_DECAY``: an exponential moving average of the weights, kept beside them.

The average is timm's ``ModelEmaV3`` (every float entry of the state_dict, parameters and
batch-norm statistics, ``ema = decay * ema + (1 - decay) * w``; integer counters copied).
The trainer calls :meth:`WeightAverage.update` once after each optimizer step, when a
sharpness-aware wrapper has already put the weights back from its perturbed points and
taken the base step: the average only ever sees the weights the run really has.

Each evaluation scores the raw and the averaged weights; metrics.csv holds both (the
average's columns end in ``_ema``), and :func:`better_weights` says which of the two
``model_best.pth`` keeps (its field ``weights``: ``raw`` or ``ema``; the run's ``best``
metrics say ``ema_weights`` 1 or 0).  Checkpoints hold the average (``ema``), so a resume continues it
bit-identically.
"""
from __future__ import annotations

import math

from torch import nn

from .errors import UserError

SUFFIX = "_ema"


class WeightAverage:
    """The run's EMA of ``model`` (off, and every method a no-op, when ``decay`` is 0)."""

    def __init__(self, model: nn.Module, decay: float):
        from timm.utils import ModelEmaV3

        self.decay = float(decay)
        self.ema = ModelEmaV3(model, decay=self.decay) if self.decay > 0 else None

    def __bool__(self) -> bool:
        return self.ema is not None

    @property
    def module(self) -> nn.Module:
        """The averaged model (eval mode, on the model's device)."""
        return self.ema.module

    def update(self, model: nn.Module) -> None:
        """One step of the average towards ``model``'s current weights."""
        if self.ema is not None:
            self.ema.update(model)

    def checkpoint_fields(self) -> dict:
        return {"ema": self.ema.module.state_dict()} if self.ema is not None else {}

    def load(self, state: dict, model: nn.Module, path) -> str | None:
        """Continue the average of checkpoint ``state``; one that has none (EMA switched on
        by an accepted config change) starts from the resumed weights, said in the message
        returned."""
        if self.ema is None:
            return None
        if "ema" not in state:
            self.ema.set(model)
            return f"{path} holds no EMA (TRAIN.EMA_DECAY was 0): the average starts from its weights"
        try:
            self.ema.module.load_state_dict(state["ema"])
        except (RuntimeError, TypeError, AttributeError) as err:
            raise UserError(f"{path}: its EMA does not fit this model "
                            f"({str(err).splitlines()[0][:160]}); resume with the config it was "
                            "trained with") from None
        return None


def columns(metrics: dict) -> dict:
    """The average's evaluation as metrics.csv columns: ``val_<metric>_ema``."""
    return {f"val_{k}{SUFFIX}": v for k, v in metrics.items()}


def better_weights(row: dict, key: str, higher_is_better: bool) -> tuple[str, dict]:
    """``("raw" | "ema", that one's val_* metrics)`` for the epoch's ``row``: the averaged
    weights when their ``key`` is finite and better, else the raw ones (ties: raw)."""
    raw = {k: v for k, v in row.items() if k.startswith("val_") and not k.endswith(SUFFIX)}
    ema = {k[: -len(SUFFIX)]: v for k, v in row.items() if k.startswith("val_") and k.endswith(SUFFIX)}
    a, b = raw.get(key), ema.get(key)
    if b is None or not math.isfinite(b):
        return "raw", raw
    if a is None or not math.isfinite(a) or (b > a if higher_is_better else b < a):
        return "ema", ema
    return "raw", raw
