"""Resume points: everything a run needs to continue bit-identically, written atomically.

A checkpoint is never written with non-finite weights (the previous one stays), and one
read back is checked field by field, so a hand-edited or foreign file is a one-line error.
"""
from __future__ import annotations

from pathlib import Path

import torch

from . import torchfile
from .errors import UserError
from .guard import require_finite
from .io import save_torch

LAST = "checkpoint_last.pth"
BEST = "model_best.pth"

#: What ``--resume`` reads, and the type each field must have.
RESUME_FIELDS = {"model": dict, "optimizer": dict, "scheduler": dict, "epoch": int,
                 "iters_done": int, "global_step": int, "rng": list, "history": list,
                 "best": dict, "partial": list}
#: Fields a checkpoint may hold besides those, and their types.
OPTIONAL_FIELDS = {"config": dict, "scaler": dict}
RNG_KEYS = {"python", "numpy", "torch"}


def _type_names(kind) -> str:
    return " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _metrics(value) -> bool:
    """A dict of metric name -> number or None (a history row, ``best``, epoch sums)."""
    return isinstance(value, dict) and all(
        isinstance(k, str) and (v is None or _number(v)) for k, v in value.items())


def _partial(value) -> bool:
    """One rank's sums of a stopped epoch (:attr:`Trainer.partial`)."""
    if not isinstance(value, dict):
        return False
    diagnostics = value.get("_diagnostics", {"sums": {}, "count": 0, "conflicts": 0})
    return (_metrics({k: v for k, v in value.items() if k != "_diagnostics"})
            and isinstance(diagnostics, dict) and _metrics(diagnostics.get("sums"))
            and all(isinstance(diagnostics.get(k), int) for k in ("count", "conflicts")))


def _rng(value) -> bool:
    """One rank's generator states (:func:`data.rng_state`), before they are set."""
    if not (isinstance(value, dict) and RNG_KEYS <= set(value)):
        return False
    numpy = value["numpy"]
    return (isinstance(value["torch"], torch.Tensor) and value["torch"].dtype == torch.uint8
            and isinstance(value["python"], tuple) and isinstance(numpy, tuple) and len(numpy) == 5
            and isinstance(numpy[1], torch.Tensor) and numpy[1].numel() == 624
            and isinstance(value.get("cuda", torch.empty(0, dtype=torch.uint8)), torch.Tensor))


#: What each list field's items must be, and how that is said.
ITEM_CHECKS = {"history": (_metrics, "a dict of metric -> number"),
               "partial": (_partial, "a dict of epoch sums (one per process)"),
               "rng": (_rng, "a dict of the generators' states (one per process)")}


def _wrong(path, field: str, value, expected: str) -> UserError:
    return UserError(f"{path}: field {field!r} is {type(value).__name__} {str(value)[:40]!r}, "
                     f"expected {expected}; the file was not written by this version of this tool "
                     "or was edited: resume from another run or start over with --overwrite")


def check_fields(state: dict, path) -> None:
    """Every field of a resume point, before any is used (:data:`RESUME_FIELDS`)."""
    for field, kind in {**RESUME_FIELDS, **OPTIONAL_FIELDS}.items():
        if field not in state and field in OPTIONAL_FIELDS:
            continue
        value = state[field]
        if not isinstance(value, kind) or isinstance(value, bool) or (kind is int and value < 0):
            raise _wrong(path, field, value, "an integer >= 0" if kind is int else _type_names(kind))
    for field, (check, expected) in ITEM_CHECKS.items():
        for item in state[field]:
            if not check(item):
                raise _wrong(path, field, item, f"a list whose items are each {expected}")
    if not _metrics(state["best"]):
        raise _wrong(path, "best", state["best"], "a dict of metric -> number")
    if len(state["rng"]) != len(state["partial"]) or not state["rng"]:
        raise _wrong(path, "rng", state["rng"], "one entry per process, as many as 'partial' has")
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state["model"].items()):
        raise _wrong(path, "model", state["model"], "a state_dict of tensors")


def save(path: Path, **state) -> Path:
    """``state`` holds plain containers and tensors only, so that it loads with
    ``weights_only=True``."""
    if "model" in state:
        require_finite(state["model"], f"the model to be saved as {path}",
                       f"the run diverged; {Path(path).name} was not written and any earlier one "
                       "is kept; lower TRAIN.LR or set TRAIN.CLIP_GRAD_NORM")
    return save_torch(state, path)


def _missing_hint(path: Path) -> str:
    """What to do without ``path``: the same advice a fresh start into its folder gives."""
    held = [name for name in (BEST, "metrics.csv", "results.json") if (path.parent / name).exists()]
    if not held:
        return " (run without --resume to start fresh)"
    return (f"; {path.parent} holds {', '.join(held)} of a run stopped before its first "
            f"checkpoint was complete: start it over with --overwrite (moves it to "
            f"{path.parent.name}.replaced-<date-time>)")


def load(path: str | Path) -> dict:
    """A full training checkpoint of this tool (for ``--resume``)."""
    path = Path(path)
    state = torchfile.read(path, "checkpoint", _missing_hint(path))
    missing = set(RESUME_FIELDS) - set(state) if isinstance(state, dict) else {"model"}
    if missing:
        raise UserError(f"{path} is not a training checkpoint of this tool (missing "
                        f"{', '.join(sorted(missing))}); use it as MODEL.PRETRAINED instead")
    check_fields(state, path)
    require_finite(state["model"], f"checkpoint {path}", "resume from another run or start fresh")
    return state
