"""ImageNet architectures from torchvision, built with the classifier sized for NUM_CLASSES.

The model is always built without weights (nothing downloads); pretrained weights are
loaded afterwards by ``tasks.engine.weights.load_lenient``, which skips the head because its shape
differs.  ``TORCHVISION_HEADS`` records where each architecture keeps its classifier, so
that the head can be skipped when loading, kept trainable when freezing the backbone and
given its own learning rate.
"""
from __future__ import annotations

import torchvision
from torch import nn

#: architecture name -> state_dict prefix of its classifier
TORCHVISION_HEADS = {
    "resnet18": "fc.",
    "resnet34": "fc.",
    "resnet50": "fc.",
    "resnet101": "fc.",
    "wide_resnet50_2": "fc.",
    "resnext50_32x4d": "fc.",
    "regnet_y_400mf": "fc.",
    "mobilenet_v2": "classifier.",
    "mobilenet_v3_small": "classifier.",
    "mobilenet_v3_large": "classifier.",
    "efficientnet_b0": "classifier.",
    "efficientnet_b1": "classifier.",
    "efficientnet_b2": "classifier.",
    "efficientnet_v2_s": "classifier.",
    "convnext_tiny": "classifier.",
    "vgg16_bn": "classifier.",
    "vit_b_16": "heads.",
    "swin_t": "head.",
}


def build_torchvision(name: str, num_classes: int) -> nn.Module:
    return torchvision.models.get_model(name, weights=None, num_classes=num_classes)
