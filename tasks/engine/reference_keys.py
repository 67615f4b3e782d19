"""Which keys of a SimpleBaseline/HRNet experiment file this tool treats differently.

Those files load unchanged, so a user may believe every key acts as in the reference; the
run says at start which ones do not (one line), instead of ignoring them silently.
"""
from __future__ import annotations

from .defaults import BASE, REFERENCE_KEYS


def reference_key_notes(cfg, task_defaults: dict) -> list[str]:
    """``"KEY (what happens instead)"`` for each key of :data:`REFERENCE_KEYS` that ``cfg``
    sets to a value other than its default, and for a weight decay given to Adam."""
    defaults = _flat(BASE)
    defaults.update(_flat(task_defaults))
    notes = []
    for key, value in _flat(cfg).items():
        reason = REFERENCE_KEYS.get(key) or next(
            (why for prefix, why in REFERENCE_KEYS.items() if prefix.endswith(".") and key.startswith(prefix)),
            None)
        if reason and value != defaults.get(key):
            notes.append(f"{key} ({reason})")
    if cfg["TRAIN"]["OPTIMIZER"] == "adam" and cfg["TRAIN"]["WD"]:
        notes.append("TRAIN.WD (not applied to adam, which the reference builds without weight "
                     "decay; use adamw for weight decay)")
    return notes


def _flat(node: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in node.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out
