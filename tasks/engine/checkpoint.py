"""Resume points: everything a run needs to continue bit-identically, written atomically."""
from __future__ import annotations

from pathlib import Path

import torch

from .errors import UserError
from .io import save_torch
from .pretrained import load_state_dict_file

LAST = "checkpoint_last.pth"
BEST = "model_best.pth"


def save(path: Path, **state) -> Path:
    """``state`` holds plain containers and tensors only, so that it loads with
    ``weights_only=True``."""
    return save_torch(state, path)


def load(path: str | Path) -> dict:
    """A full training checkpoint of this tool (for ``--resume``)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path} (run without --resume to start fresh)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise UserError(f"cannot read checkpoint {path}: truncated or corrupt ({first}); "
                        "delete it or resume from another run") from None
    missing = {"model", "optimizer", "epoch"} - set(state) if isinstance(state, dict) else {"model"}
    if missing:
        raise UserError(f"{path} is not a training checkpoint of this tool (missing "
                        f"{', '.join(sorted(missing))}); use it as MODEL.PRETRAINED instead")
    return state


def load_model_weights(model: torch.nn.Module, path: str | Path) -> None:
    """Load the weights of a checkpoint (``model_best.pth``, ``checkpoint_last.pth``) or a
    plain state_dict into ``model``, strictly: any mismatch is a one-line error."""
    state = load_state_dict_file(path)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        lines = [l.strip() for l in str(err).splitlines() if l.strip()]
        detail = lines[1] if len(lines) > 1 else lines[0]
        raise UserError(f"checkpoint {path} does not fit MODEL of this config ({detail[:200]}); "
                        "use the config it was trained with") from None
