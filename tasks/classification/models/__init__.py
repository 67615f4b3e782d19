"""Classifier zoo keyed by ``MODEL.NAME``: CIFAR networks of the BSAM paper, torchvision, and
any timm architecture as ``timm/<name>``.

``build_classifier(name, num_classes)`` is the one entry point (also used by the QAT
task); ``head_prefix(name)`` tells where a model keeps its classifier (a tuple of state_dict
prefixes), which pretrained loading, backbone freezing and the LR groups all need.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Callable

from torch import nn

from tasks.engine.errors import UserError

from .cifar_resnet import cifar_resnet18, he_cifar_resnet
from .pyramidnet import PyramidNet
from .timm_backbones import build_timm, is_known, is_timm, timm_heads
from .torchvision_backbones import TORCHVISION_HEADS, build_torchvision
from .wideresnet import WideResNet


@dataclass(frozen=True)
class ModelSpec:
    build: Callable[[int], nn.Module]
    head: str  # state_dict prefix of the classifier
    description: str


_MODELS: dict[str, ModelSpec] = {
    "cifar_resnet18": ModelSpec(cifar_resnet18, "fc.", "ResNet-18 with a 3x3 stem, 32x32 input"),
    "cifar_resnet20": ModelSpec(lambda k: he_cifar_resnet(20, k), "fc.", "He et al. CIFAR ResNet-20"),
    "cifar_resnet56": ModelSpec(lambda k: he_cifar_resnet(56, k), "fc.", "He et al. CIFAR ResNet-56"),
    "wrn28_10": ModelSpec(lambda k: WideResNet(28, 10, k), "fc.", "WideResNet-28-10"),
    "pyramidnet110": ModelSpec(
        lambda k: PyramidNet(110, 270, k), "fc.", "PyramidNet-110, alpha 270 (basic blocks)"
    ),
}
for _name, _head in TORCHVISION_HEADS.items():
    _MODELS[_name] = ModelSpec(
        (lambda n: lambda k: build_torchvision(n, k))(_name), _head, f"torchvision {_name}"
    )


def available_models() -> list[str]:
    """The suite's own names (timm's are ``timm/<name>``, see :func:`is_model_name`)."""
    return sorted(_MODELS)


#: what MODEL.NAME takes, for the config check's message
MODEL_NAMES_HELP = (f"one of {', '.join(sorted(_MODELS))}, or timm/<name> with a name of "
                    "timm.list_models() (e.g. timm/resnet18, timm/convnext_atto)")


def is_model_name(name) -> bool:
    """Whether ``MODEL.NAME`` names a model (one of :func:`available_models` or ``timm/<name>``);
    an unknown name is a :class:`UserError` with the closest known name, the config check's
    one-line message."""
    if name in _MODELS or (is_timm(name) and is_known(name)):
        return True
    raise UserError(f"MODEL.NAME: unknown model {name!r}; {_closest(str(name))}"
                    f"expected {MODEL_NAMES_HELP}")


def _closest(name: str) -> str:
    import timm

    known = list(_MODELS) + [f"timm/{n}" for n in timm.list_models()]
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    return f"did you mean {close[0]!r}? " if close else ""


def _spec(name: str) -> ModelSpec:
    if name not in _MODELS:
        close = difflib.get_close_matches(name, _MODELS, n=1, cutoff=0.5)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise UserError(
            f"unknown MODEL.NAME {name!r}; {hint}available: {', '.join(available_models())}"
        )
    return _MODELS[name]


def build_classifier(name: str, num_classes: int) -> nn.Module:
    """A freshly initialised classifier ``name`` with ``num_classes`` outputs."""
    if num_classes < 1:
        raise UserError(f"MODEL.NUM_CLASSES must be >= 1, got {num_classes}")
    if is_timm(name):
        return build_timm(name, num_classes)
    return _spec(name).build(num_classes)


def head_prefix(name: str) -> tuple[str, ...]:
    """The state_dict prefixes (e.g. ``("fc.",)``) of the classifier of model ``name``."""
    if is_timm(name):
        return timm_heads(name)
    return (_spec(name).head,)
