"""The optimizer's parameter groups of a classifier: head and backbone LRs, layer-wise LR
decay, and no weight decay on norm and bias tensors.

* ``TRAIN.BACKBONE_LR_MULT``: every parameter outside the classifier learns at LR x this.
* ``TRAIN.LAYER_DECAY`` (1 = off): the LR scale of each layer is timm's
  (``timm.optim.param_groups_layer_decay``: the classifier at 1, each layer below it one
  more factor of LAYER_DECAY), from the model's ``group_matcher`` (every timm model; the
  torchvision ResNets share timm's ResNet layout, so timm's ResNet matcher groups them).
  It multiplies BACKBONE_LR_MULT.
* ``TRAIN.NO_WD_NORM_BIAS``: normalisation layers' weights and every bias get weight decay 0
  (timm's ``filter_bias_and_bn``, torchvision's ``--norm-weight-decay 0``); other 1-D tensors
  (e.g. ConvNeXt's layer scales) keep it.

Groups are ordered head first, so that group 0 carries the schedule's base LR (the log's
``lr`` column).  Each group's LR is TRAIN.LR x its ``lr_mult``; rho and rho_min are the
optimizer's defaults in every group, and BSAM anchors each group's rho_min schedule at the
group's own LR.
"""
from __future__ import annotations

from torch import nn

from tasks.engine.errors import UserError

from .models import is_timm
from .models.torchvision_backbones import TORCHVISION_HEADS

#: torchvision architectures laid out as timm's ResNet (conv1, bn1, layer1-4, fc)
TORCHVISION_RESNETS = tuple(n for n in TORCHVISION_HEADS if n.startswith(("resnet", "wide_resnet", "resnext")))
_NORMS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm, nn.RMSNorm)


class _TimmResNetLayout:
    """A torchvision ResNet seen through timm's ResNet ``group_matcher`` (duck-typed for
    ``param_groups_layer_decay``: named parameters and a matcher)."""

    def __init__(self, model: nn.Module):
        self.model = model

    def named_parameters(self):
        return self.model.named_parameters()

    def group_matcher(self, coarse: bool = False):
        from timm.models.resnet import ResNet

        return ResNet.group_matcher(self.model, coarse)


def layer_scales(model: nn.Module, name: str, decay: float) -> dict[str, float]:
    """``{parameter name: LR scale}`` of timm's layer-wise decay for model ``name``."""
    from timm.optim import param_groups_layer_decay

    if is_timm(name):
        layout = model
    elif name in TORCHVISION_RESNETS:
        layout = _TimmResNetLayout(model)
    else:
        raise UserError(f"TRAIN.LAYER_DECAY {decay:g}: MODEL.NAME {name} has no layer grouping; "
                        f"use a timm/<name> model or one of {', '.join(TORCHVISION_RESNETS)}, or set "
                        "TRAIN.LAYER_DECAY: 1")
    groups = param_groups_layer_decay(layout, weight_decay=0.0, layer_decay=decay)
    scale_of = {id(p): g["lr_scale"] for g in groups for p in g["params"]}
    return {n: scale_of[id(p)] for n, p in model.named_parameters() if id(p) in scale_of}


def norm_and_bias_names(model: nn.Module) -> set[str]:
    """Names of the parameters of normalisation layers, and of every bias."""
    names = set()
    for module_name, module in model.named_modules():
        is_norm = isinstance(module, _NORMS) or "norm" in type(module).__name__.lower()
        for key, _ in module.named_parameters(recurse=False):
            if is_norm or key == "bias":
                names.add(f"{module_name}.{key}" if module_name else key)
    return names


def build_param_groups(model: nn.Module, cfg, heads: tuple[str, ...]):
    """The groups of the module docstring; a plain parameter list when every switch is off."""
    t = cfg.TRAIN
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    mult, decay, no_wd = float(t.BACKBONE_LR_MULT), float(t.LAYER_DECAY), bool(t.NO_WD_NORM_BIAS)
    if mult == 1.0 and decay == 1.0 and not no_wd:
        return [p for _, p in trainable]
    scales = layer_scales(model, cfg.MODEL.NAME, decay) if decay != 1.0 else {}
    plain = norm_and_bias_names(model) if no_wd else set()
    groups: dict[tuple, dict] = {}
    for n, p in trainable:
        head = n.startswith(heads)
        scale = scales.get(n, 1.0) * (1.0 if head else mult)
        key = (not head, -scale, n in plain)  # the sort order: head first, then by falling LR
        if key not in groups:
            groups[key] = {"params": [], "lr_mult": scale,
                           "name": _group_name(head, scale, n in plain, decay != 1.0)}
            if scale != 1.0:  # else the optimizer's LR, TRAIN.LR
                groups[key]["lr"] = t.LR * scale
            if n in plain:
                groups[key]["weight_decay"] = 0.0
        groups[key]["params"].append(p)
    return [groups[k] for k in sorted(groups)]


def _group_name(head: bool, scale: float, plain: bool, layered: bool) -> str:
    name = "head" if head else "backbone"
    if layered and not head:
        name += f"_x{scale:.4g}"
    return name + ("_no_wd" if plain else "")
