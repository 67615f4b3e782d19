"""``MODEL.PRETRAINED`` for HRNet: the layers ``MODEL.EXTRA.PRETRAINED_LAYERS`` names, as HRNet does.

HRNet's rule: a tensor of the file is taken when the first component of its name is one of
``PRETRAINED_LAYERS`` (or the list starts with ``'*'``), and loaded non-strictly.  That is
what lets an ImageNet file of HRNet-Image-Classification (``hrnet_w32-36af842e.pth``) start
a pose model: its stem, transitions and stages carry the pose model's names, its
classification head (``incre_modules``, ``downsamp_modules``, ``final_layer``,
``classifier``) is left out by the list, and the fuse layers its last unit keeps for the
lower-resolution outputs have no counterpart here.  Unlike the reference, what was
skipped is reported, and a selected tensor of another shape, a layer name the model does
not have, or a file that fits nothing are errors rather than silent no-ops.
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from tasks.engine.errors import UserError

from .hrnet import TOP_LAYERS

ALL_LAYERS = "*"


@dataclass
class LayerLoad:
    """What :func:`load_layers` did: tensor counts and the name groups they fall in."""

    loaded: int
    outside_layers: list[str]  # top-level names of file tensors PRETRAINED_LAYERS leaves out
    not_in_model: list[str]  # file tensors selected but absent from the model (grouped)
    kept_init: list[str]  # model tensors the file did not provide (grouped)
    counts: tuple[int, int, int]  # tensors behind the three lists

    def summary(self) -> str:
        outside, absent, kept = self.counts
        parts = [f"loaded {self.loaded} tensors"]
        if outside:
            parts.append(f"skipped {outside} outside PRETRAINED_LAYERS ({', '.join(self.outside_layers)})")
        if absent:
            parts.append(f"skipped {absent} this model does not have ({_few(self.not_in_model)})")
        if kept:
            parts.append(f"{kept} keep their initialisation ({_few(self.kept_init)})")
        return "; ".join(parts)


def check_layers(layers: list | None) -> None:
    """``PRETRAINED_LAYERS`` is null or ``['*']`` (all) or names of the model's top-level layers."""
    key = "MODEL.EXTRA.PRETRAINED_LAYERS"
    if layers is None:
        return
    if not layers:
        raise UserError(f"{key}: empty; list the layers to take from MODEL.PRETRAINED, or ['*'] for all")
    if layers[0] == ALL_LAYERS:
        return
    unknown = [name for name in layers if name not in TOP_LAYERS]
    if unknown:
        raise UserError(f"{key}: {unknown} {'is not a layer' if len(unknown) == 1 else 'are not layers'} of "
                        f"pose_hrnet; choose from {', '.join(TOP_LAYERS)} (or ['*'] for all)")


def load_layers(model: nn.Module, state: dict[str, Tensor], layers: list | None, source: str) -> LayerLoad:
    """Copy the tensors of ``state`` that ``layers`` selects into ``model`` (HRNet's rule)."""
    check_layers(layers)
    take_all = layers is None or layers[0] == ALL_LAYERS
    own = model.state_dict()
    chosen = {k: v for k, v in state.items() if take_all or k.split(".")[0] in layers}
    outside = [k for k in state if k not in chosen]
    absent = [k for k in chosen if k not in own]
    wrong = [f"{k} (file {list(v.shape)} vs model {list(own[k].shape)})"
             for k, v in chosen.items() if k in own and v.shape != own[k].shape]
    if wrong:
        raise UserError(f"{source}: {len(wrong)} tensors PRETRAINED_LAYERS selects have another shape, e.g. "
                        f"{'; '.join(wrong[:2])}; the file is of another HRNet width (check MODEL.EXTRA) "
                        "or another network")
    fitting = {k: v.to(dtype=own[k].dtype) for k, v in chosen.items() if k in own}
    if not fitting:
        raise UserError(f"{source} holds none of the tensors MODEL.EXTRA.PRETRAINED_LAYERS selects "
                        f"({', '.join(layers or [ALL_LAYERS])}); is it an HRNet file?")
    model.load_state_dict({**own, **fitting}, strict=True)
    kept = [k for k in own if k not in fitting]
    return LayerLoad(len(fitting), sorted({k.split(".")[0] for k in outside}), _groups(absent), _groups(kept),
                     (len(outside), len(absent), len(kept)))


def _groups(keys: list[str]) -> list[str]:
    """Tensor names cut to their module (``stage4.2.fuse_layers.1``), in first-seen order."""
    seen = {}
    for key in keys:
        parts = key.split(".")
        seen.setdefault(".".join(parts[:4] if parts[0].startswith("stage") else parts[:1]), None)
    return list(seen)


def _few(names: list[str], n: int = 4) -> str:
    return ", ".join(names[:n]) + (f" ... (+{len(names) - n} more)" if len(names) > n else "")
