"""Any timm architecture as ``MODEL.NAME: timm/<name>`` (``timm/resnet18``, ``timm/convnext_atto``,
``timm/resnet18.a1_in1k``), built without downloading anything.

timm knows, for every architecture and pretrained tag, where the classifier is, which input
size, normalisation and interpolation the weights expect (its pretrained config), and which
Hugging Face repository holds the weights.  This module reads those facts; the weights
themselves are loaded by ``tasks.engine.weights`` like any other file.  A pretrained tag
(``MODEL.PRETRAINED: timm``) is looked up in the local Hugging Face cache only: the error
for a missing file names the file, the repository and the folder to put it in.
"""
from __future__ import annotations

import os
from pathlib import Path

from torch import nn

from tasks.engine.errors import UserError

PREFIX = "timm/"
#: files a timm repository on the Hugging Face hub keeps its weights in, preferred first
HUB_FILES = ("model.safetensors", "pytorch_model.bin")


def is_timm(name: str) -> bool:
    return isinstance(name, str) and name.startswith(PREFIX)


def architecture(name: str) -> str:
    """``timm/resnet18.a1_in1k`` -> ``resnet18.a1_in1k`` (what ``timm.create_model`` takes)."""
    return name[len(PREFIX):]


def is_known(name: str) -> bool:
    """Whether ``name`` (``timm/<arch>[.<tag>]``) names a timm architecture and, if given, one
    of its pretrained tags."""
    import timm

    arch = architecture(name)
    if not arch or not timm.is_model(arch):
        return False
    return "." not in arch or arch in timm.list_pretrained(arch)


def _pretrained_cfg(name: str):
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(architecture(name))
    if cfg is None:
        raise UserError(f"MODEL.NAME {name}: timm has no pretrained config for it")
    return cfg


def build_timm(name: str, num_classes: int) -> nn.Module:
    """The architecture, randomly initialised, with a classifier of ``num_classes`` outputs."""
    import timm

    if not is_known(name):
        raise UserError(f"unknown timm model {name!r}: MODEL.NAME timm/<name> takes a name of "
                        f"timm.list_models() (e.g. timm/resnet18, timm/convnext_atto)")
    return timm.create_model(architecture(name), pretrained=False, num_classes=num_classes)


def timm_heads(name: str) -> tuple[str, ...]:
    """The state_dict prefixes of the classifier(s) (timm's pretrained config ``classifier``)."""
    head = _pretrained_cfg(name).classifier or "head"
    return tuple(f"{h}." for h in ((head,) if isinstance(head, str) else head))


def timm_data_config(name: str) -> dict:
    """timm's data config of the weights (``input_size``, ``mean``, ``std``, ``interpolation``,
    ``crop_pct``) through ``timm.data.resolve_data_config``."""
    from timm.data import resolve_data_config

    return resolve_data_config(pretrained_cfg=_pretrained_cfg(name).to_dict())


def hub_cache_dir() -> Path:
    """Where huggingface_hub keeps downloaded repositories (``$HF_HUB_CACHE`` or
    ``$HF_HOME/hub``), read when called so that the environment of the run decides."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "huggingface")
    return Path(home).expanduser() / "hub"


def cached_weights(name: str) -> Path:
    """The local file of the pretrained tag in ``name`` (timm's default tag if none), from the
    Hugging Face cache; nothing is downloaded."""
    from huggingface_hub import try_to_load_from_cache

    cfg = _pretrained_cfg(name)
    repo = cfg.hf_hub_id
    if not repo:
        raise UserError(f"MODEL.PRETRAINED timm: {architecture(name)} has no Hugging Face weights "
                        f"({cfg.url or 'none known'}); download them and give the file's path")
    folder = hub_cache_dir()
    files = (cfg.hf_hub_filename,) if cfg.hf_hub_filename else HUB_FILES
    for file in files:
        found = try_to_load_from_cache(repo, file, cache_dir=folder)
        if isinstance(found, str) and Path(found).is_file():
            return Path(found)
    raise UserError(f"pretrained weights {repo} are not in the Hugging Face cache {folder}: put "
                    f"{files[0]} there (`huggingface-cli download {repo} {files[0]}` on a machine "
                    f"with network, copy {folder} over; or give MODEL.PRETRAINED the file's path); "
                    "nothing is downloaded at run time")
