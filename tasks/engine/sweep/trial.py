"""One trial: an ordinary run of the trainer, in ``<out>/trials/<TASK>/<study>_trial<NNN>``
(its config, log, metrics.csv, checkpoints and results.json, as ``tools/train.py`` writes
them), with the trial's values as ``--opts`` overrides of the sweep's config."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import optuna
from optuna.trial import TrialState

from .. import config as config_lib
from .. import run_dir as run_dir_lib
from ..cli import one_line
from ..errors import UserError
from ..trainer import Trainer
from . import ownership
from .space import Param
from .study import Claim


@dataclass
class Outcome:
    """How a trial ended; ``state`` None: stopped by a signal, left RUNNING to be resumed, or
    (with ``lost``) owned by another process now, recorded by it."""
    state: TrialState | None
    value: float | None = None
    epochs: int = 0
    reason: str = ""
    fatal: bool = False  # the sweep itself is wrong (the metric is not logged): stop it
    lost: str = ""  # why another process records this trial instead


class _Superseded(Exception):
    """Another process owns the trial now: this run stops at the end of its epoch."""


@dataclass
class _Progress:
    metric: str
    reported: set = field(default_factory=set)
    epochs: int = 0


def trial_name(study_name: str, number: int) -> str:
    return f"{study_name}_trial{number:03d}"


def trial_config(cfg_path: Path, opts: list[str], params: list[Param], values: dict, out: Path,
                 name: str) -> config_lib.Config:
    """The sweep's config with the trial's values, its run folder under ``out/trials``."""
    overrides = [x for p in params for x in (p.key, p.opt_value(values[p.key]))]
    return config_lib.load(cfg_path, [*opts, *overrides, "OUTPUT_DIR", str(out / "trials"), "NAME", name])


def run_trial(claim: Claim, cfg_path: Path, opts: list[str], params: list[Param], metric: str,
              out: Path) -> Outcome:
    """Train (or, for a trial taken over, resume) the claimed trial and say how it ended."""
    trial = claim.trial
    progress = _Progress(metric, set(claim.reported))
    try:
        cfg = trial_config(cfg_path, opts, params, trial.params, out,
                           trial_name(trial.study.study_name, trial.number))
        results = _train(cfg, [_ownership_hook(claim), _pruning_hook(trial, progress)])
    except optuna.TrialPruned as pruned:
        return Outcome(TrialState.PRUNED, epochs=progress.epochs, reason=str(pruned))
    except (_Superseded, optuna.exceptions.UpdateFinishedTrialError):
        return Outcome(None, epochs=progress.epochs, lost=lost_reason(trial))
    except UserError as err:
        return Outcome(TrialState.FAIL, epochs=progress.epochs, reason=one_line(err))
    except (RuntimeError, ValueError, FloatingPointError) as err:  # e.g. out of memory
        first = (str(err).splitlines() or [""])[0][:300]
        return Outcome(TrialState.FAIL, epochs=progress.epochs, reason=f"{type(err).__name__}: {first}")
    if results.get("stopped"):
        return Outcome(None, epochs=progress.epochs)
    return _judged(results, metric)


def _judged(results: dict, metric: str) -> Outcome:
    epochs = int(results.get("epochs", 0))
    if results.get("error"):
        return Outcome(TrialState.FAIL, epochs=epochs, reason=str(results["error"]))
    final = results.get("final", {})
    if metric not in final:
        logged = ", ".join(k for k in final if k.startswith("val_")) or "none"
        return Outcome(TrialState.FAIL, epochs=epochs, fatal=True,
                       reason=f"metrics.csv has no column {metric} (its val_ columns: {logged}); "
                              "pass one of them to --metric")
    value = final[metric]
    if value is None or not math.isfinite(value):
        return Outcome(TrialState.FAIL, epochs=epochs, reason=f"{metric} is {value} after the last epoch")
    return Outcome(TrialState.COMPLETE, float(value), epochs)


def _train(cfg, hooks: list) -> dict:
    """Run the trial's folder to its end: a finished run is read, not retrained (the sweep
    stopped before recording it); a checkpoint is continued; else a fresh start."""
    folder = run_dir_lib.run_dir_of(cfg)
    finished = folder / "results.json"
    if finished.is_file():
        return json.loads(finished.read_text())
    with run_dir_lib.claim(folder, "auto") as held:
        trainer = Trainer(cfg, resume=held.resume)
        trainer.epoch_hooks.extend(hooks)
        return trainer.fit()


def _ownership_hook(claim: Claim):
    """End the run after an epoch in which another process took the trial over (this one's
    heartbeat had been older than the grace period: a stalled machine, not a dead one), so
    that two runs of one trial do not both tell Optuna how it ended."""
    def hook(epoch: int, row: dict) -> None:
        if not ownership.owns(claim.trial, claim.token):
            raise _Superseded()
    return hook


def lost_reason(trial: optuna.Trial) -> str:
    """Who owns the trial now, and why this process records nothing."""
    frozen = trial.study._storage.get_trial(trial._trial_id)
    where = ownership.location(frozen)
    did = "finished" if frozen.state.is_finished() else "runs"
    return (f"another sweep process ({where}) took it over while this one's heartbeat was older than "
            f"--grace and {did} it; this run records nothing (raise --grace if machines stall that long)")


def _pruning_hook(trial: optuna.Trial, progress: _Progress):
    """Report each evaluated epoch to Optuna and end the run when its pruner says so (the
    run folder keeps that epoch's checkpoint)."""
    def hook(epoch: int, row: dict) -> None:
        progress.epochs = epoch + 1
        value = row.get(progress.metric)
        if value is None or not math.isfinite(value) or epoch in progress.reported:
            return
        trial.report(float(value), epoch)
        progress.reported.add(epoch)
        if trial.should_prune():
            raise optuna.TrialPruned(f"pruned after epoch {epoch} ({progress.metric} {value:.4g})")
    return hook


def record(study: optuna.Study, claim: Claim, outcome: Outcome) -> Outcome:
    """Tell Optuna how the trial ended (with its epochs and, if any, why it failed), unless
    another process owns the trial now: then the outcome says so and nothing is told (Optuna
    refuses to update a finished trial; one that another process runs is its to tell)."""
    if not ownership.owns(claim.trial, claim.token):
        return Outcome(None, epochs=outcome.epochs, lost=lost_reason(claim.trial))
    try:
        claim.trial.set_user_attr("epochs", outcome.epochs)
        if outcome.reason:
            claim.trial.set_user_attr("reason", outcome.reason)
        value = outcome.value if outcome.state == TrialState.COMPLETE else None
        study.tell(claim.trial, value, state=outcome.state)
    except optuna.exceptions.UpdateFinishedTrialError:
        return Outcome(None, epochs=outcome.epochs, lost=lost_reason(claim.trial))
    return outcome
