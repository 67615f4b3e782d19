"""Hyperparameter sweeps on Optuna: each trial is an ordinary run of the trainer.

``tools/sweep.py`` parses the command line into :class:`SweepArgs` and calls :func:`sweep`.
A sweep folder (``--out``, default ``OUTPUT_DIR/sweeps/<study>``) holds the study's SQLite
file (unless ``--storage`` names a database), the trials' run folders, their locks and the
report.  Starting the same command again continues the study: finished trials are kept, a
trial left running by a killed sweep is resumed from its checkpoint, and new trials are
asked for until the study holds ``--trials``; several processes (or machines, sharing a
database URL) can work on one study at once, and a trial whose machine stopped sending its
heartbeat is taken over by another.  See docs/sweeps.md.
"""
from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import optuna
from optuna.storages._heartbeat import get_heartbeat_thread

from .. import config as config_lib
from .. import task as task_registry
from ..cli import STOPPED
from ..errors import UserError
from .report import write_report
from .space import Param, extremes, parse_spaces
from .study import folder_lock, next_trial, open_study
from .trial import record, run_trial

SAMPLERS = ("tpe", "grid")
PRUNERS = ("none", "median")


@dataclass
class SweepArgs:
    cfg: Path
    spaces: list[str]
    trials: int = 20
    opts: list[str] = field(default_factory=list)
    metric: str | None = None  # default: val_<the task's main metric>
    minimize: bool = False
    study: str | None = None  # default: the config's NAME
    storage: str | None = None  # default: sqlite:///<out>/study.db
    out: Path | None = None
    sampler: str = "tpe"
    pruner: str = "none"
    report_only: bool = False
    heartbeat: int = 60  # seconds between a running trial's heartbeats
    grace: int | None = None  # default: 10 x heartbeat


def check_params(cfg_path: Path, opts: list[str], params: list[Param]) -> None:
    """Every key must exist and accept both ends of its range (every choice): a bad space is
    one line now, not a failed trial later."""
    for p in params:
        for value in extremes(p):
            try:
                config_lib.load(cfg_path, [*opts, p.key, value])
            except UserError as err:
                raise UserError(f"--space {p.text!r}: {str(err).removeprefix('--opts: ')}") from None


def make_sampler(kind: str, params: list[Param], budget: int) -> optuna.samplers.BaseSampler:
    """TPE (joint over the keys; a third of a small budget, at most 10, drawn at random
    first) or a grid over :meth:`Param.grid`."""
    if kind == "grid":
        return _Grid({p.key: p.grid() for p in params})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(n_startup_trials=min(10, max(2, budget // 3)), multivariate=True)


class _Grid(optuna.samplers.GridSampler):
    """Optuna's grid sampler, without its call to ``study.stop()`` once the grid is used up
    (meant for ``study.optimize``; this sweep asks and tells, and caps its budget at the
    grid's size instead)."""

    def after_trial(self, study, trial, state, values) -> None:
        pass


def _budget(args: SweepArgs, params: list[Param]) -> int:
    if args.trials < 1:
        raise UserError(f"--trials {args.trials}: give at least 1")
    if args.sampler == "grid":
        return min(args.trials, math.prod(len(p.grid()) for p in params))
    return args.trials


def _liveness(args: SweepArgs) -> tuple[int, int]:
    """``(heartbeat, grace)`` in seconds.  The grace period must leave room for a late
    heartbeat (a busy database, a slow epoch's evaluation), or a live trial would be taken
    over and trained twice."""
    if args.heartbeat < 1:
        raise UserError(f"--heartbeat {args.heartbeat}: give the seconds between a trial's heartbeats, at least 1")
    grace = 10 * args.heartbeat if args.grace is None else args.grace
    if grace < 2 * args.heartbeat:
        raise UserError(f"--grace {grace}: give at least twice --heartbeat ({args.heartbeat} s), e.g. "
                        f"{10 * args.heartbeat} (the default), so that a late heartbeat is not taken "
                        "for a dead machine")
    return args.heartbeat, grace


def _study_name(args: SweepArgs, cfg) -> str:
    name = args.study or cfg.NAME
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,59}", name):
        raise UserError(f"--study {name!r}: use up to 60 letters, digits, '.', '_' or '-' "
                        "(it names the sweep folder and the trials' run folders)")
    return name


def sweep(args: SweepArgs) -> int:
    """Run (or, with ``report_only``, only report) the sweep; returns the exit status."""
    cfg = config_lib.load(args.cfg, args.opts)
    params = parse_spaces(args.spaces)
    if not params:
        raise UserError("give at least one --space KEY=log:LOW:HIGH (or float/int/choice)")
    check_params(args.cfg, args.opts, params)
    heartbeat, grace = _liveness(args)
    metric = args.metric or f"val_{task_registry.get(cfg.TASK).main_metric}"
    if not metric.startswith("val_"):
        raise UserError(f"--metric {metric}: a sweep is judged on a validation column of "
                        "metrics.csv (val_...), e.g. val_top1 or val_loss with --minimize")
    name = _study_name(args, cfg)
    out = (args.out or Path(cfg.OUTPUT_DIR) / "sweeps" / name).resolve()
    (out / "locks").mkdir(parents=True, exist_ok=True)
    budget = _budget(args, params)
    definition = {"space": [p.text for p in params], "metric": metric,
                  "direction": "minimize" if args.minimize else "maximize", "sampler": args.sampler}
    pruner = optuna.pruners.MedianPruner() if args.pruner == "median" else optuna.pruners.NopPruner()
    with folder_lock(out):  # one process creates the storage's tables, the others wait
        study = open_study(args.storage or f"sqlite:///{out / 'study.db'}", name, definition,
                           make_sampler(args.sampler, params, budget), pruner, heartbeat, grace)
    code = 0 if args.report_only else _run_trials(study, args, params, metric, out, budget)
    text, written = write_report(study, params, metric, args.minimize, out, cfg.OUTPUT_DIR)
    print(text)
    print("wrote " + ", ".join(str(p) for p in written))
    return code


def _run_trials(study: optuna.Study, args: SweepArgs, params: list[Param], metric: str, out: Path,
                budget: int) -> int:
    """Claim and run trials until the study holds ``budget`` of them (or a signal stops it);
    each trial's heartbeat is recorded while it trains."""
    while (claim := next_trial(study, params, budget, out)) is not None:
        shown = ", ".join(f"{p.key} {p.opt_value(claim.trial.params[p.key])}" for p in params)
        print(f"[trial {claim.trial.number} of {budget}{', ' + claim.how if claim.how else ''}] {shown}",
              flush=True)
        try:
            with get_heartbeat_thread(claim.trial._trial_id, study._storage):
                outcome = run_trial(claim, args.cfg, args.opts, params, metric, out)
            if outcome.state is None and not outcome.lost:
                print(f"trial {claim.trial.number} stopped by a signal; start the same command "
                      "again to continue it", flush=True)
                return STOPPED
            if not outcome.lost:
                outcome = record(study, claim, outcome)
        finally:
            claim.release()
        print(_ended(claim, outcome, metric), flush=True)
        if outcome.fatal:
            raise UserError(outcome.reason)
    return 0


def _ended(claim, outcome, metric: str) -> str:
    """The line that says how a trial ended here."""
    if outcome.lost:
        return f"[trial {claim.trial.number}] left to another process: {outcome.lost}"
    value = f"{metric} {outcome.value:.4g}, " if outcome.value is not None else ""
    return (f"[trial {claim.trial.number}] {outcome.state.name.lower()}: {value}{outcome.epochs} "
            f"epoch(s){'; ' + outcome.reason if outcome.reason else ''}")
