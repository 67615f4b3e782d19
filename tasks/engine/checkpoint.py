"""Resume points: everything a run needs to continue bit-identically, written atomically.

A checkpoint is never written with non-finite weights (the previous one stays), and one
read back is checked field by field, so a hand-edited or foreign file is a one-line error.
"""
from __future__ import annotations

import re
from pathlib import Path

import torch

from . import torchfile
from .errors import UserError
from .guard import require_finite
from .io import save_torch
from .pretrained import load_state_dict_file

LAST = "checkpoint_last.pth"
BEST = "model_best.pth"

#: What ``--resume`` reads, and the type each field must have.
RESUME_FIELDS = {"model": dict, "optimizer": dict, "scheduler": dict, "epoch": int,
                 "iters_done": int, "global_step": int, "rng": (dict, list), "history": list,
                 "best": dict, "partial": (dict, list)}


def _type_names(kind) -> str:
    return " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))


def save(path: Path, **state) -> Path:
    """``state`` holds plain containers and tensors only, so that it loads with
    ``weights_only=True``."""
    if "model" in state:
        require_finite(state["model"], f"the model to be saved as {path}",
                       f"the run diverged; {Path(path).name} was not written and any earlier one "
                       "is kept; lower TRAIN.LR or set TRAIN.CLIP_GRAD_NORM")
    return save_torch(state, path)


def load(path: str | Path) -> dict:
    """A full training checkpoint of this tool (for ``--resume``)."""
    path = Path(path)
    state = torchfile.read(path, "checkpoint", " (run without --resume to start fresh)")
    missing = set(RESUME_FIELDS) - set(state) if isinstance(state, dict) else {"model"}
    if missing:
        raise UserError(f"{path} is not a training checkpoint of this tool (missing "
                        f"{', '.join(sorted(missing))}); use it as MODEL.PRETRAINED instead")
    for field, kind in RESUME_FIELDS.items():
        value = state[field]
        if not isinstance(value, kind) or isinstance(value, bool) or (kind is int and value < 0):
            raise UserError(f"{path}: field {field!r} is {type(value).__name__} {str(value)[:40]!r}, "
                            f"expected {'an integer >= 0' if kind is int else _type_names(kind)}; the "
                            "file was not written by this tool or was edited: resume from another run")
    if not all(isinstance(v, torch.Tensor) for v in state["model"].values()):
        raise UserError(f"{path}: field 'model' is not a state_dict of tensors; resume from another run")
    require_finite(state["model"], f"checkpoint {path}", "resume from another run or start fresh")
    return state


def load_model_weights(model: torch.nn.Module, path: str | Path) -> None:
    """Load the weights of a checkpoint (``model_best.pth``, ``checkpoint_last.pth``) or a
    plain state_dict into ``model``, strictly: any mismatch is a one-line error."""
    fit_weights(model, load_state_dict_file(path), path)


def fit_weights(model: torch.nn.Module, state: dict, path: str | Path) -> None:
    """``state`` (read from ``path``) into ``model`` through its own ``load_state_dict``, so
    that the model's load hooks apply (e.g. pose reads the reference's key layout)."""
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise UserError(f"checkpoint {path} does not fit MODEL of this config ({mismatch_summary(err)}); "
                        "use the config it was trained with") from None


def mismatch_summary(err: RuntimeError) -> str:
    """torch's load_state_dict error in whole words: how many keys are missing or unexpected,
    the first few of them, and the first shape mismatch."""
    parts, sizes = [], []
    for line in (l.strip() for l in str(err).splitlines()):
        kind = re.match(r"(Missing|Unexpected) key\(s\) in state_dict:", line)
        if kind:
            keys = re.findall(r'"([^"]+)"', line)
            more = f", ... ({len(keys)} in all)" if len(keys) > 3 else ""
            parts.append(f"{kind.group(1).lower()}: {', '.join(keys[:3])}{more}")
        elif line.startswith("size mismatch for"):
            sizes.append(line.rstrip("."))
    if sizes:
        parts.append(sizes[0] + (f" (and {len(sizes) - 1} more)" if len(sizes) > 1 else ""))
    return "; ".join(parts) or str(err).strip().splitlines()[-1]
