"""The study in its storage, and which trial a sweep process runs next.

Optuna keeps the study (an SQLite file by default, any RDB URL for many machines).  What it
does not know is whether a RUNNING trial's process is still alive: each sweep process holds
an ``flock`` on ``<out>/locks/<study>_trial<N>.lock`` for the trial it runs, which the operating
system releases when the process ends in any way.  A RUNNING trial of this machine and
sweep folder whose lock is free was left by a killed sweep; the next process takes it over
under its own number (its run folder resumes from its checkpoint), so no trial is counted
twice.  Choosing the next trial and asking Optuna for a new one happen under one lock of
the sweep folder, so two processes on one folder never take the same trial nor run past
the budget together.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.trial import TrialState

from ..errors import UserError
from ..run_dir import try_lock
from .space import Param

#: What defines a study; a later start with other values would mix two searches in one.
DEFINING = ("space", "metric", "direction", "sampler")


def open_study(storage: str, name: str, definition: dict, sampler, pruner) -> optuna.Study:
    """Create the study or load it (a restart, another process), refusing one that was
    created with another definition (:data:`DEFINING`)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    engine = {"connect_args": {"timeout": 120}} if storage.startswith("sqlite") else {}
    try:
        store = optuna.storages.RDBStorage(storage, engine_kwargs=engine)
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
    """A trial this process runs: the Optuna trial and the lock that says so."""
    trial: optuna.Trial
    lock_fd: int
    taken_over: bool  # left RUNNING by a killed sweep
    reported: frozenset = frozenset()  # epochs whose value Optuna already holds

    def release(self) -> None:
        os.close(self.lock_fd)


def _lock_file(study: optuna.Study, out: Path, number: int) -> Path:
    return out / "locks" / f"{study.study_name}_trial{number}.lock"


def _still_running(study: optuna.Study, number: int) -> bool:
    return any(t.number == number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))


def next_trial(study: optuna.Study, params: list[Param], budget: int, out: Path) -> Claim | None:
    """A trial left running by a killed sweep of this folder, else a new one while the study
    holds fewer than ``budget`` trials, else None."""
    here = {"host": socket.gethostname(), "out": str(out)}
    with folder_lock(out):
        for frozen in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if all(frozen.user_attrs.get(k) == v for k, v in here.items()):
                fd = try_lock(_lock_file(study, out, frozen.number))
                if fd is None:
                    continue
                if _still_running(study, frozen.number):  # not finished since it was listed
                    # Optuna's handle on an existing trial is built from its storage id
                    return Claim(optuna.Trial(study, frozen._trial_id), fd, taken_over=True,
                                 reported=frozenset(frozen.intermediate_values))
                os.close(fd)
        if len(study.get_trials(deepcopy=False)) >= budget:
            return None
        trial = study.ask(distributions(params))
        fd = try_lock(_lock_file(study, out, trial.number))
        if fd is None:
            raise UserError(f"{_lock_file(study, out, trial.number)} is held by another process "
                            "although Optuna just created its trial; remove stale sweeps from the folder")
        for key, value in here.items():
            trial.set_user_attr(key, value)
        return Claim(trial, fd, taken_over=False)
