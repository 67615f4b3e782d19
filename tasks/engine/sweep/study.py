"""The study in its storage, and which trial a sweep process runs next.

Optuna keeps the study (an SQLite file by default, any RDB URL for many machines).  What it
does not know is whether a RUNNING trial's process is still alive.  Two signs tell:

- on this machine, each sweep process holds an ``flock`` on
  ``<out>/locks/<study>_trial<N>.lock`` for the trial it runs, which the operating system
  releases when the process ends in any way: a RUNNING trial of this machine and sweep
  folder whose lock is free was left by a killed sweep and is taken over at once;
- from any machine, the trial's Optuna heartbeat, refreshed every ``--heartbeat`` seconds
  while it trains: a RUNNING trial of another machine or folder whose heartbeat is older
  than ``--grace`` was left by a dead (or stalled) machine and is taken over.

Either way the trial keeps its number and parameters (its run folder resumes from its
checkpoint where this folder has it), so no trial is counted twice and the budget is exact,
and the takeover itself is the atomic swap of :func:`ownership.swap_claim`, so of several
processes that notice the same trial one runs it.  Choosing the next trial and asking Optuna
for a new one happen under one lock of the sweep folder, so two processes on one folder
never run past the budget together.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import warnings
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from ..errors import UserError
from ..run_dir import try_lock
from . import ownership
from .space import Param

#: What defines a study; a later start with other values would mix two searches in one.
DEFINING = ("space", "metric", "direction", "sampler")


def open_study(storage: str, name: str, definition: dict, sampler, pruner, heartbeat: int,
               grace: int) -> optuna.Study:
    """Create the study or load it (a restart, another process), refusing one that was
    created with another definition (:data:`DEFINING`).  The storage records heartbeats
    every ``heartbeat`` seconds and calls a trial stale after ``grace`` seconds without one."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    engine = {"connect_args": {"timeout": 120}} if storage.startswith("sqlite") else {}
    try:
        with warnings.catch_warnings():  # the heartbeat arguments are marked experimental
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            store = optuna.storages.RDBStorage(storage, engine_kwargs=engine, heartbeat_interval=heartbeat,
                                               grace_period=grace)
    except (ImportError, ValueError, optuna.exceptions.StorageInternalError) as err:
        raise UserError(f"--storage {storage}: cannot open it ({str(err).splitlines()[0][:200]}); "
                        "give an SQLAlchemy URL such as sqlite:///sweep.db or "
                        "postgresql://user:password@host/db (with its driver installed)") from None
    study = optuna.create_study(storage=store, study_name=name, sampler=sampler, pruner=pruner,
                                direction=definition["direction"], load_if_exists=True)
    stored = study.user_attrs.get("sweep")
    if stored is None:
        study.set_user_attr("sweep", definition)
    elif any(stored.get(k) != definition[k] for k in DEFINING):
        was = "; ".join(f"{k} {stored.get(k)}" for k in DEFINING if stored.get(k) != definition[k])
        raise UserError(f"study {name!r} in {storage} was created with {was}; give the same "
                        "--space/--metric/--minimize/--sampler to continue it, or another --study")
    return study


def distributions(params: list[Param]) -> dict:
    return {p.key: p.distribution() for p in params}


@contextlib.contextmanager
def folder_lock(out: Path):
    """Exclusive (blocking) lock of the sweep folder while a process picks its next trial."""
    fd = os.open(out / "locks" / "sweep.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


@dataclass
class Claim:
    """A trial this process runs: the Optuna trial, the lock and the token that say so."""
    trial: optuna.Trial
    lock_fd: int
    token: str  # the trial's ``claim`` user attribute while this process owns it
    how: str = ""  # how it came here: "" new, "resumed" or "taken over from ..."
    reported: frozenset = frozenset()  # epochs whose value Optuna already holds

    def release(self) -> None:
        os.close(self.lock_fd)


def _lock_file(study: optuna.Study, out: Path, number: int) -> Path:
    return out / "locks" / f"{study.study_name}_trial{number}.lock"


def _is_here(frozen: FrozenTrial, here: dict) -> bool:
    return all(frozen.user_attrs.get(k) == v for k, v in here.items())


def next_trial(study: optuna.Study, params: list[Param], budget: int, out: Path) -> Claim | None:
    """A trial left running by a killed sweep of this folder, else one whose heartbeat went
    stale on another machine or folder, else a new one while the study holds fewer than
    ``budget`` trials, else None."""
    here = {"host": socket.gethostname(), "out": str(out)}
    with folder_lock(out):
        claim = _orphan_here(study, out, here) or _stale_elsewhere(study, out, here)
        if claim is not None or len(study.get_trials(deepcopy=False)) >= budget:
            return claim
        return _new_trial(study, params, out, here)


def _orphan_here(study: optuna.Study, out: Path, here: dict) -> Claim | None:
    """A RUNNING trial of this machine and folder whose lock is free."""
    for frozen in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if _is_here(frozen, here):
            claim = _take_over(study, frozen, out, here, "resumed")
            if claim is not None:
                return claim
    return None


def _stale_elsewhere(study: optuna.Study, out: Path, here: dict) -> Claim | None:
    """A RUNNING trial of another machine or folder whose heartbeat is older than the grace
    period (one of this folder is left to its lock, which is exact)."""
    for trial_id in ownership.stale_trial_ids(study):
        frozen = study._storage.get_trial(trial_id)
        if not _is_here(frozen, here):
            where = ownership.location(frozen)
            claim = _take_over(study, frozen, out, here, f"taken over from {where}",
                               ownership.rdb(study).grace_period)
            if claim is not None:
                return claim
    return None


def _take_over(study: optuna.Study, frozen: FrozenTrial, out: Path, here: dict, how: str,
               grace: float | None = None) -> Claim | None:
    """The trial under this process's lock and token, or None where another process holds
    its lock here or swapped its token first (or it finished meanwhile, or, with ``grace``, its
    heartbeat is no longer that old)."""
    fd = try_lock(_lock_file(study, out, frozen.number))
    if fd is None:
        return None
    token = ownership.new_token()
    if not ownership.swap_claim(ownership.rdb(study), frozen._trial_id, frozen.user_attrs.get(ownership.CLAIM),
                                token, grace):
        os.close(fd)
        return None
    # Optuna's handle on an existing trial is built from its storage id
    claim = Claim(optuna.Trial(study, frozen._trial_id), fd, token, how, frozenset(frozen.intermediate_values))
    try:
        _mark_owner(study, claim, here)
    except optuna.exceptions.UpdateFinishedTrialError:  # its old owner told it just now
        claim.release()
        return None
    return claim


def _new_trial(study: optuna.Study, params: list[Param], out: Path, here: dict) -> Claim:
    with warnings.catch_warnings():  # ask/tell with heartbeats is this module's use of them
        warnings.filterwarnings("ignore", "Heartbeat of storage", UserWarning)
        trial = study.ask(distributions(params))
    fd = try_lock(_lock_file(study, out, trial.number))
    if fd is None:
        raise UserError(f"{_lock_file(study, out, trial.number)} is held by another process "
                        "although Optuna just created its trial; remove stale sweeps from the folder")
    token = ownership.new_token()
    trial.set_user_attr(ownership.CLAIM, token)
    claim = Claim(trial, fd, token)
    _mark_owner(study, claim, here)
    return claim


def _mark_owner(study: optuna.Study, claim: Claim, here: dict) -> None:
    """Say where the trial runs (its lock is in this folder) and start its heartbeat, so that a
    trial with a token always has one and can be taken over should this machine die."""
    for key, value in here.items():
        claim.trial.set_user_attr(key, value)
    study._storage.record_heartbeat(claim.trial._trial_id)
