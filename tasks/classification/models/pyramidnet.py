"""PyramidNet (Han, Kim & Kim, 2017) for 32x32 inputs, additive widening, basic blocks.

The width grows by alpha / (3 n) channels at every block (n = (depth - 2) / 6 blocks per
stage), from 16 to 16 + alpha, instead of doubling at each stage.  Blocks are
BN-conv-BN-ReLU-conv-BN without a final ReLU; shortcuts have no weights (2x2 average
pooling when downsampling, zero-padded channels).  PyramidNet-110 with alpha = 270
(28.3 M parameters) is the model of the SAM/BSAM papers' CIFAR tables.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PyramidBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(c_out)
        self.stride = stride
        self.extra = c_out - c_in

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(self.bn1(x))
        out = self.conv2(F.relu(self.bn2(out)))
        out = self.bn3(out)
        skip = F.avg_pool2d(x, 2, ceil_mode=True) if self.stride > 1 else x
        if self.extra:
            skip = F.pad(skip, (0, 0, 0, 0, 0, self.extra))
        return out + skip


class PyramidNet(nn.Module):
    def __init__(self, depth: int, alpha: float, num_classes: int):
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"PyramidNet (basic blocks) depth must be 6n+2, got {depth}")
        n = (depth - 2) // 6
        step = alpha / (3 * n)
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        width, c_in, blocks = 16.0, 16, []
        for stage in range(3):
            for j in range(n):
                width += step
                c_out = int(round(width))
                blocks.append(PyramidBlock(c_in, c_out, 2 if (stage > 0 and j == 0) else 1))
                c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        self.bn_final = nn.BatchNorm2d(c_in)
        self.fc = nn.Linear(c_in, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.bn1(self.conv1(x)))
        x = F.relu(self.bn_final(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))
