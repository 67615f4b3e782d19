"""The one place weights get into a model: reading them, then loading strictly or leniently.

* :func:`read_state_dict` reads a checkpoint of this tool or a plain state_dict (through
  :mod:`torchfile`: ``weights_only=True``, bounded); :func:`read_pretrained` also takes a
  torchvision weights name such as ``ResNet18_Weights.IMAGENET1K_V1``, looked up in the
  torch hub cache only (where ``torchvision`` would download it), so nothing is fetched
  behind the user's back and the error for a missing file says which file to put where.
* :func:`load_strict` (trained models: ``--checkpoint``, ``Task.load_trained``) accepts
  nothing but an exact fit, through the model's own ``load_state_dict`` so that its load
  hooks apply (pose reads the reference's key layout).
* :func:`load_lenient` (``MODEL.PRETRAINED``): fine-tuning usually changes the classifier,
  so keys under given head prefixes that are missing or of another shape are skipped and
  reported; any other difference means another architecture and is an error.
"""
from __future__ import annotations

import difflib
import os
import re
from pathlib import Path
from typing import Iterable

import torch
from torch import Tensor, nn

from . import torchfile
from .errors import UserError
from .guard import require_finite
from .io import input_file

_WEIGHT_NAME = re.compile(r"^[A-Za-z0-9_]+_Weights\.[A-Za-z0-9_]+$")


def read_state_dict(path) -> dict[str, Tensor]:
    """Read a state_dict from ``path``: a checkpoint ``{"model": sd, ...}`` or a plain state_dict.

    A leading ``module.`` (saved from a DDP-wrapped model) is removed.
    """
    path = Path(path)
    obj = (_read_safetensors(path) if path.suffix == ".safetensors"
           else torchfile.read(path, "weights file"))
    state = obj
    if isinstance(obj, dict):
        for key in ("model", "state_dict"):
            if isinstance(obj.get(key), dict):
                state = obj[key]
                break
    if not isinstance(state, dict) or not state or not all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in state.items()
    ):
        raise UserError(
            f"weights file {path} holds no state_dict: expected a dict of tensors or a "
            f"checkpoint with a 'model' entry"
        )
    require_finite(state, f"weights file {path}", "the run that wrote it diverged; use another checkpoint")
    if all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return dict(state)


def _read_safetensors(path: Path) -> dict[str, Tensor]:
    """A ``.safetensors`` file (timm's and the Hugging Face hub's format; it holds tensors only)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    input_file(path, "weights file")
    try:
        return load_file(path, device="cpu")
    except (SafetensorError, OSError, ValueError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
        raise UserError(f"cannot read weights file {path}: not a valid safetensors file ({first})") from None


def torch_hub_checkpoint_dir() -> Path:
    """Where torchvision keeps downloaded weights (``$TORCH_HOME/hub/checkpoints``)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def _all_weight_names() -> list[str]:
    import torchvision

    names = []
    for model in torchvision.models.list_models():
        try:
            enum = torchvision.models.get_model_weights(model)
        except Exception:
            continue
        names += [f"{enum.__name__}.{member.name}" for member in enum]
    return names


def _weights_enum(spec: str):
    import torchvision

    try:
        return torchvision.models.get_weight(spec)
    except (KeyError, ValueError, AttributeError):
        close = difflib.get_close_matches(spec, _all_weight_names(), n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise UserError(
            f"unknown torchvision weights {spec!r}{hint} (names look like "
            f"'ResNet18_Weights.IMAGENET1K_V1'; or give the path of a weights file)"
        ) from None


def read_pretrained(spec: str) -> dict[str, Tensor]:
    """State dict for ``spec``: a torchvision weights name (from the hub cache) or a file path."""
    spec = str(spec)
    if _WEIGHT_NAME.match(spec) and not os.path.exists(spec):
        weights = _weights_enum(spec)
        file_name = os.path.basename(weights.url)
        folder = torch_hub_checkpoint_dir()
        if not (folder / file_name).is_file():
            raise UserError(
                f"pretrained weights {spec} are not in the torch hub cache: put {file_name} "
                f"(from {weights.url}) into {folder} (set TORCH_HOME to use another cache; "
                f"nothing is downloaded automatically)"
            )
        return read_state_dict(folder / file_name)
    return read_state_dict(spec)


def _under(key: str, prefixes: Iterable[str]) -> bool:
    return any(key.startswith(p) for p in prefixes)


def _few(keys: list[str], n: int = 4) -> str:
    shown = ", ".join(keys[:n])
    return shown + (f" ... (+{len(keys) - n} more)" if len(keys) > n else "")


def load_lenient(
    model: nn.Module,
    state_dict: dict[str, Tensor],
    skip_prefixes: tuple[str, ...] = ("fc.", "classifier.", "head."),
    source: str = "pretrained weights",
) -> list[str]:
    """Copy ``state_dict`` into ``model``; return the head keys that were skipped.

    Keys under ``skip_prefixes`` that are missing, unexpected or of another shape are
    skipped (the model keeps its own initialisation) and returned for the caller to log.
    Any other missing, unexpected or mismatched key raises :class:`UserError`, so weights
    of a different architecture never load silently.  BatchNorm ``num_batches_tracked``
    counters absent from old files are tolerated.
    """
    target = model.state_dict()
    skipped, missing, unexpected, mismatched = [], [], [], []
    merged = dict(target)
    for key, value in target.items():
        if key not in state_dict:
            if _under(key, skip_prefixes):
                skipped.append(key)
            elif not key.endswith("num_batches_tracked"):
                missing.append(key)
            continue
        given = state_dict[key]
        if given.shape != value.shape:
            if _under(key, skip_prefixes):
                skipped.append(key)
            else:
                mismatched.append(
                    f"{key} (file {list(given.shape)} vs model {list(value.shape)})"
                )
            continue
        merged[key] = given.to(dtype=value.dtype)
    for key in state_dict:
        if key not in target:
            (skipped if _under(key, skip_prefixes) else unexpected).append(key)
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing: {_few(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected: {_few(unexpected)}")
    if mismatched:
        problems.append(f"{len(mismatched)} with another shape: {_few(mismatched, 2)}")
    if problems:
        raise UserError(
            f"{source} do not fit the model ({'; '.join(problems)}); check that MODEL.NAME "
            f"matches the architecture the weights were trained with"
        )
    model.load_state_dict(merged, strict=True)
    return sorted(skipped)


def load_strict(model: nn.Module, state: dict, source) -> None:
    """``state`` (read from ``source``) into ``model`` exactly, through its own
    ``load_state_dict`` (so that its load hooks apply); any mismatch is a one-line error."""
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise UserError(f"checkpoint {source} does not fit MODEL of this config ({mismatch_summary(err)}); "
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


def load_file_strict(model: nn.Module, path) -> None:
    """The weights of a checkpoint (``model_best.pth``, ``checkpoint_last.pth``) or a plain
    state_dict file into ``model``: :func:`read_state_dict` then :func:`load_strict`."""
    load_strict(model, read_state_dict(path), path)
