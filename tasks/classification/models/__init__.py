"""Classifier zoo keyed by ``MODEL.NAME``: CIFAR networks of the BSAM paper + torchvision.

``build_classifier(name, num_classes)`` is the one entry point (also used by the QAT
task); ``head_prefix(name)`` tells where a model keeps its classifier, which pretrained
loading, backbone freezing and the backbone learning-rate multiplier all need.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Callable

from torch import nn

from tasks.engine.errors import UserError

from .cifar_resnet import cifar_resnet18, he_cifar_resnet
from .pyramidnet import PyramidNet
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
    return sorted(_MODELS)


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
    return _spec(name).build(num_classes)


def head_prefix(name: str) -> str:
    """The state_dict prefix (e.g. ``"fc."``) of the classifier of model ``name``."""
    return _spec(name).head
