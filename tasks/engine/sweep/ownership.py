"""Which process owns a RUNNING trial, across processes and machines sharing the study.

Optuna's heartbeat (``RDBStorage(heartbeat_interval=..., grace_period=...)`` and its
heartbeat thread) records when a trial's process last showed signs of life; a RUNNING trial
whose heartbeat is older than the grace period is stale.  What Optuna does not offer is a way
for exactly one of several processes to take a stale trial over under its own number:
``fail_stale_trials`` can only fail it (and on SQLite, which has no ``SELECT ... FOR UPDATE``,
two processes may both fail it and both enqueue a copy).  So the owner of a trial is the
``claim`` token among its user attributes, and a process becomes the owner by swapping that
token in one conditional statement, which the database applies for at most one of the
processes that saw the same old token.
"""
from __future__ import annotations

import json
import uuid
from datetime import timedelta

import optuna
import sqlalchemy
from optuna.storages import RDBStorage
from optuna.storages._rdb import models
from optuna.trial import TrialState

#: The user attribute holding the owner's token.
CLAIM = "claim"


def new_token() -> str:
    """A token no other claim has, so that a swap cannot succeed by coincidence."""
    return uuid.uuid4().hex


def rdb(study: optuna.Study) -> RDBStorage:
    """The RDBStorage under Optuna's cache of finished trials: the swap is SQL on its engine."""
    storage = study._storage
    return getattr(storage, "_backend", storage)


def swap_claim(storage: RDBStorage, trial_id: int, old: str | None, new: str,
               grace: float | None = None) -> bool:
    """Make ``new`` the trial's token if it still is ``old`` (None: the trial has none) and the
    trial is still RUNNING (with ``grace``: and its heartbeat older than ``grace`` seconds);
    True for the one process whose statement did it, whose heartbeat then starts afresh.

    One UPDATE whose WHERE holds the old token (or one INSERT that the unique key of
    ``(trial_id, key)`` refuses a second time): every database evaluates it under the row's
    write lock, so of several processes that read the same old token, one changes a row and
    the others change none.  The staleness is tested in the same statement, and the heartbeat
    refreshed in the same transaction, so a process that reads the token of a takeover just
    made cannot swap it once more.
    """
    try:
        with storage.engine.begin() as connection:
            eligible = _eligible(connection, trial_id, grace)
            if connection.execute(_swap(eligible, trial_id, old, new)).rowcount != 1:
                return False
            _beat(connection, trial_id)
            return True
    except sqlalchemy.exc.IntegrityError:  # another process inserted the first token (or heartbeat)
        return False


def _eligible(connection, trial_id: int, grace: float | None):
    """SELECT of the trial's id while it may be claimed: RUNNING and, with ``grace``, silent for
    longer than that on the database's clock."""
    trial, beat = models.TrialModel, models.TrialHeartbeatModel
    query = sqlalchemy.select(trial.trial_id).where(trial.trial_id == trial_id, trial.state == TrialState.RUNNING)
    if grace is None:
        return query
    now = connection.execute(sqlalchemy.select(sqlalchemy.func.now())).scalar().replace(tzinfo=None)
    silent = sqlalchemy.select(beat.trial_id).where(beat.trial_id == trial_id,
                                                    beat.heartbeat < now - timedelta(seconds=grace))
    return query.where(trial.trial_id.in_(silent))


def _swap(eligible, trial_id: int, old: str | None, new: str):
    """The one statement that moves the token from ``old`` to ``new``."""
    attr = models.TrialUserAttributeModel
    if old is None:
        return sqlalchemy.insert(attr).from_select(
            ["trial_id", "key", "value_json"],
            eligible.add_columns(sqlalchemy.literal(CLAIM), sqlalchemy.literal(json.dumps(new))))
    return (sqlalchemy.update(attr).values(value_json=json.dumps(new))
            .where(attr.trial_id == trial_id, attr.key == CLAIM, attr.value_json == json.dumps(old),
                   attr.trial_id.in_(eligible)))


def _beat(connection, trial_id: int) -> None:
    """The trial's heartbeat, now (the row Optuna's heartbeat thread refreshes)."""
    beat = models.TrialHeartbeatModel
    now = sqlalchemy.func.current_timestamp()
    refreshed = connection.execute(sqlalchemy.update(beat).where(beat.trial_id == trial_id).values(heartbeat=now))
    if refreshed.rowcount == 0:
        connection.execute(sqlalchemy.insert(beat).values(trial_id=trial_id, heartbeat=now))


def location(frozen) -> str:
    """``host:out`` of the sweep process that last claimed the trial (its user attributes)."""
    return f"{frozen.user_attrs.get('host', '?')}:{frozen.user_attrs.get('out', '?')}"


def stale_trial_ids(study: optuna.Study) -> list[int]:
    """RUNNING trials whose heartbeat is older than the storage's grace period (Optuna's own
    test, on the database's clock, so the machines' clocks need not agree)."""
    return study._storage._get_stale_trial_ids(study._study_id)


def owns(trial: optuna.Trial, token: str) -> bool:
    """Whether the trial is still RUNNING under ``token`` (False once another process took it
    over or finished it)."""
    frozen = trial.study._storage.get_trial(trial._trial_id)
    return frozen.state == TrialState.RUNNING and frozen.user_attrs.get(CLAIM) == token
