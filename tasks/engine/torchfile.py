"""Read a user's torch file safely (``weights_only=True``) and say honestly why it failed.

A file that the safe loader refuses is not "corrupt": it holds Python objects outside the
allowlist, and the user needs to hear that (and that the file was *not* loaded) rather than
delete a good file.
"""
from __future__ import annotations

import pickle
import re
from pathlib import Path

import torch

from .errors import UserError

_UNSUPPORTED = re.compile(r"Unsupported global: GLOBAL (\S+)")


def read(path: str | Path, what: str):
    """``torch.load(path, weights_only=True)`` on the CPU, or a one-line :class:`UserError`."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except OSError as err:
        raise UserError(f"cannot read {what} {path}: {err.strerror or err}") from None
    except pickle.UnpicklingError as err:
        text = str(err)
        if "Weights only load failed" in text:
            found = _UNSUPPORTED.search(text)
            name = found.group(1) if found else text.strip().splitlines()[-1][:160]
            raise UserError(f"{what} {path} holds Python objects that safe loading refuses "
                            f"({name}); it was not loaded: save plain tensors and containers "
                            "(e.g. a state_dict)") from None
        raise UserError(_corrupt(path, what, err)) from None
    except Exception as err:  # truncated zip, not a torch file at all ...
        raise UserError(_corrupt(path, what, err)) from None


def _corrupt(path, what, err) -> str:
    first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
    return f"cannot read {what} {path}: truncated or corrupt ({first})"
