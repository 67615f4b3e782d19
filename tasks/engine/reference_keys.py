"""Which keys of a SimpleBaseline/HRNet experiment file this tool treats differently.

Those files load unchanged, so a user may believe every key acts as in the reference; the
run says at start which ones do not (one line, from each record's ``reference`` note),
instead of ignoring them silently.
"""
from __future__ import annotations

from . import task as task_registry
from .schema import flatten, record_of


def reference_key_notes(cfg) -> list[str]:
    """``"KEY (what happens instead)"`` for each key with a ``reference`` note that ``cfg``
    sets to a value other than its default, for a weight decay given to Adam, and how the
    task was chosen when the config sets no ``TASK``."""
    schema = task_registry.get(cfg["TASK"]).config_schema()
    notes = [f"TASK ({cfg.task_note})"] if getattr(cfg, "task_note", "") else []
    for key, value in flatten(cfg).items():
        spec = record_of(schema, key)
        if spec is not None and spec.reference and value != spec.default:
            notes.append(f"{key} ({spec.reference})")
    if cfg["TRAIN"]["OPTIMIZER"] == "adam" and cfg["TRAIN"]["WD"]:
        notes.append("TRAIN.WD (not applied to adam, which the reference builds without weight "
                     "decay; use adamw for weight decay)")
    return notes
