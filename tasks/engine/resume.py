"""What ``--resume`` checks before it continues a run, and what it changes when told to.

A resumed run is the same experiment only if the config that shapes the training is the
same, so a difference in any key but those whose record is ``run_only`` (where or how fast a
run goes, not what it trains) is refused, listing the keys.
``--accept-config-change`` continues anyway under the new values: the weights and the
optimizer's running state come from the checkpoint, the hyperparameters of every parameter
group (LR, weight decay, rho ...) from the new config, so ``config.yaml`` tells the truth.
"""
from __future__ import annotations

from . import task as task_registry
from .defaults import ENGINE
from .errors import UserError
from .schema import flatten, record_of


def config_changes(stored: dict, current: dict) -> list[tuple[str, object, object]]:
    """``(key, stored value, current value)`` for every training key that differs (in the
    schema of ``current``'s task).  Keys that only one side knows (added or removed by
    another version of this tool) are not differences."""
    schema = task_registry.get(current.get("TASK", ENGINE["TASK"].default)).config_schema()
    old, new = flatten(stored), flatten(current)
    return [(key, old[key], new[key]) for key in sorted(old.keys() & new.keys())
            if old[key] != new[key] and not getattr(record_of(schema, key), "run_only", False)]


def check_config(stored, current: dict, accept: bool, path) -> list[str]:
    """Refuse (one line) or, with ``accept``, return the accepted changes as text."""
    if not isinstance(stored, dict):
        raise UserError(f"{path} holds no config to compare with; resume a run of this tool")
    changes = [f"{key} {a!r} -> {b!r}" for key, a, b in config_changes(stored, current)]
    if changes and not accept:
        shown = "; ".join(changes[:6]) + (f"; ... (+{len(changes) - 6} more)" if len(changes) > 6 else "")
        raise UserError(f"{path} was trained with another config ({shown}); resume with the "
                        "config it was trained with, start a new run (another NAME), or pass "
                        "--accept-config-change to continue under the new values")
    return changes


def group_hyperparameters(optimizer) -> list[dict]:
    """Everything of each parameter group except its parameters (taken before loading)."""
    return [{k: v for k, v in group.items() if k != "params"} for group in optimizer.param_groups]


def apply_hyperparameters(optimizer, scheduler, fresh: list[dict]) -> None:
    """Put the new config's group settings back after the checkpoint's were loaded; the LR
    is the new base LR at the schedule's current position."""
    scheduler.base_lrs = [group["initial_lr"] for group in fresh]
    for group, settings, base, factor in zip(optimizer.param_groups, fresh, scheduler.base_lrs,
                                             scheduler.lr_lambdas):
        group.update({k: v for k, v in settings.items() if k != "lr"})
        group["lr"] = base * factor(scheduler.last_epoch)
    scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]
