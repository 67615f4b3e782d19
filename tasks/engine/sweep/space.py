"""Search spaces from the command line, as Optuna distributions.

``KEY=log:LOW:HIGH`` (log-uniform), ``KEY=float:LOW:HIGH``, ``KEY=int:LOW:HIGH`` (both
ends included) or ``KEY=choice:A,B,C``; ``KEY`` is a dotted config key.  The grid sampler
needs finite values: a ``log``/``float`` space takes ``:N`` after HIGH for its number of
grid points (default 5, geometric for ``log``); TPE samples the range itself.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from optuna.distributions import (BaseDistribution, CategoricalDistribution, FloatDistribution,
                                  IntDistribution)

from ..errors import UserError

KINDS = ("log", "float", "int", "choice")
GRID_POINTS = 5


@dataclass(frozen=True)
class Param:
    """One searched key: ``text`` is the ``--space`` argument it came from."""
    text: str
    key: str
    kind: str
    low: float = 0.0
    high: float = 0.0
    choices: tuple[str, ...] = ()
    points: int = GRID_POINTS

    def distribution(self) -> BaseDistribution:
        if self.kind == "choice":
            return CategoricalDistribution(self.choices)
        if self.kind == "int":
            return IntDistribution(int(self.low), int(self.high))
        return FloatDistribution(self.low, self.high, log=self.kind == "log")

    def grid(self) -> list:
        """The values the grid sampler visits."""
        if self.kind == "choice":
            return list(self.choices)
        if self.kind == "int":
            return list(range(int(self.low), int(self.high) + 1))
        spaced = np.geomspace if self.kind == "log" else np.linspace
        return [float(v) for v in spaced(self.low, self.high, self.points)]

    def opt_value(self, value) -> str:
        """``value`` as an ``--opts`` value (read back by the config with the key's type)."""
        return repr(float(value)) if self.kind in ("log", "float") else str(value)


def parse_space(text: str) -> Param:
    """``"SAM.RHO=log:0.005:0.5"`` -> :class:`Param`; a malformed one is a one-line error."""
    key, sep, rule = text.partition("=")
    kind, _, bounds = rule.partition(":")
    if not sep or not key or kind not in KINDS or not bounds:
        raise UserError(f"--space {text!r}: expected KEY=log:LOW:HIGH, KEY=float:LOW:HIGH, "
                        "KEY=int:LOW:HIGH or KEY=choice:A,B,...")
    if kind == "choice":
        choices = tuple(c for c in bounds.split(",") if c != "")
        if len(choices) < 1 or len(set(choices)) != len(choices):
            raise UserError(f"--space {text!r}: give distinct choices separated by commas")
        return Param(text, key, kind, choices=choices)
    fields = bounds.split(":")
    if len(fields) not in (2, 3) or (kind == "int" and len(fields) == 3):
        grid = "" if kind == "int" else f" or {kind}:LOW:HIGH:GRID_POINTS"
        raise UserError(f"--space {text!r}: expected {kind}:LOW:HIGH{grid}")
    number = int if kind == "int" else float
    try:
        low, high = number(fields[0]), number(fields[1])
        points = int(fields[2]) if len(fields) == 3 else GRID_POINTS
    except ValueError:
        raise UserError(f"--space {text!r}: LOW and HIGH must be {'integers' if kind == 'int' else 'numbers'}"
                        + (", GRID_POINTS an integer" if len(fields) == 3 else "")) from None
    if not (np.isfinite(low) and np.isfinite(high)) or low >= high:
        raise UserError(f"--space {text!r}: LOW must be below HIGH")
    if kind == "log" and low <= 0:
        raise UserError(f"--space {text!r}: a log range needs LOW > 0")
    if points < 2:
        raise UserError(f"--space {text!r}: GRID_POINTS must be at least 2")
    return Param(text, key, kind, float(low), float(high), points=points)


def parse_spaces(texts: list[str]) -> list[Param]:
    params = [parse_space(t) for t in texts]
    keys = [p.key for p in params]
    twice = sorted({k for k in keys if keys.count(k) > 1})
    if twice:
        raise UserError(f"--space: {', '.join(twice)} given more than once; give each key one space")
    return params


def extremes(param: Param) -> list[str]:
    """The values whose config check proves every value of the space acceptable (both
    ends of a range, every choice)."""
    if param.kind == "choice":
        return list(param.choices)
    return [param.opt_value(int(v) if param.kind == "int" else v) for v in (param.low, param.high)]
