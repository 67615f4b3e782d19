"""ResNets for 32x32 inputs, as used in the CIFAR experiments of the SAM/BSAM papers.

Two families, because both appear in the literature under the name "ResNet":

* ``cifar_resnet18``: the ImageNet ResNet-18 layout (64-128-256-512 channels, two basic
  blocks per stage) with the 7x7 stem and max-pool replaced by one 3x3 convolution, so
  a 32x32 image keeps its resolution in the first stage.  This is the model of the BSAM
  paper's CIFAR tables.
* ``cifar_resnet20`` / ``cifar_resnet56``: He et al. (2016), section 4.2: three stages of
  16-32-64 channels with n = (depth - 2) / 6 basic blocks each and parameter-free
  shortcuts ("option A": stride-2 subsampling plus zero-padded channels).

Both name their classifier ``fc`` so that pretrained-weight loading can skip it by prefix.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _conv3x3(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)


class _PaddedIdentity(nn.Module):
    """Option-A shortcut: subsample spatially and zero-pad the new channels (no weights)."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.stride = stride
        self.extra = c_out - c_in

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if self.extra:
            x = F.pad(x, (0, 0, 0, 0, self.extra // 2, self.extra - self.extra // 2))
        return x


class BasicBlock(nn.Module):
    """conv-BN-ReLU-conv-BN plus a shortcut, then ReLU (the original post-activation block)."""

    def __init__(self, c_in: int, c_out: int, stride: int, projection_shortcut: bool):
        super().__init__()
        self.conv1 = _conv3x3(c_in, c_out, stride)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = _conv3x3(c_out, c_out)
        self.bn2 = nn.BatchNorm2d(c_out)
        if stride == 1 and c_in == c_out:
            self.shortcut = nn.Identity()
        elif projection_shortcut:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out)
            )
        else:
            self.shortcut = _PaddedIdentity(c_in, c_out, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """3x3 stem, stages of basic blocks (first block of each later stage has stride 2), GAP, fc."""

    def __init__(self, widths, blocks_per_stage, num_classes: int, projection_shortcut: bool):
        super().__init__()
        self.conv1 = _conv3x3(3, widths[0])
        self.bn1 = nn.BatchNorm2d(widths[0])
        stages, c_in = [], widths[0]
        for i, (width, n) in enumerate(zip(widths, blocks_per_stage)):
            blocks = []
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(BasicBlock(c_in, width, stride, projection_shortcut))
                c_in = width
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.fc = nn.Linear(c_in, num_classes)
        _init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.stages(x)
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self.fc(x)


def _init_weights(model: nn.Module) -> None:
    """He-normal convolutions (fan-out, as in torchvision), unit BN, default Linear."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def cifar_resnet18(num_classes: int) -> CifarResNet:
    return CifarResNet((64, 128, 256, 512), (2, 2, 2, 2), num_classes, projection_shortcut=True)


def he_cifar_resnet(depth: int, num_classes: int) -> CifarResNet:
    """He et al.'s CIFAR ResNet of ``depth`` = 6n + 2 layers (20, 32, 44, 56, 110 ...)."""
    if (depth - 2) % 6:
        raise ValueError(f"CIFAR ResNet depth must be 6n+2 (20, 32, 44, 56, 110), got {depth}")
    n = (depth - 2) // 6
    return CifarResNet((16, 32, 64), (n, n, n), num_classes, projection_shortcut=False)
