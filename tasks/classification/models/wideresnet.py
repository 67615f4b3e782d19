"""Wide ResNet (Zagoruyko & Komodakis, 2016) for 32x32 inputs: WRN-depth-k.

Pre-activation blocks (BN-ReLU-conv), widths 16, 16k, 32k, 64k with (depth - 4) / 6
blocks per stage, a 1x1 convolution shortcut where the shape changes, and a final
BN-ReLU before pooling.  WRN-28-10 (36.5 M parameters, no dropout) is the SAM/BSAM
papers' "WideResNet" for CIFAR.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PreActBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int, dropout: float):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.dropout = dropout
        self.shortcut = (
            None
            if stride == 1 and c_in == c_out
            else nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = F.relu(self.bn1(x))
        # With a projection the shortcut sees the activated input (as in the WRN paper's code).
        skip = x if self.shortcut is None else self.shortcut(pre)
        out = self.conv1(pre)
        out = F.relu(self.bn2(out))
        if self.dropout:
            out = F.dropout(out, self.dropout, self.training)
        return self.conv2(out) + skip


class WideResNet(nn.Module):
    def __init__(self, depth: int, width: int, num_classes: int, dropout: float = 0.0):
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"WideResNet depth must be 6n+4 (16, 22, 28, 40), got {depth}")
        n = (depth - 4) // 6
        widths = (16 * width, 32 * width, 64 * width)
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        stages, c_in = [], 16
        for i, c_out in enumerate(widths):
            blocks = []
            for j in range(n):
                blocks.append(PreActBlock(c_in, c_out, 2 if (i > 0 and j == 0) else 1, dropout))
                c_in = c_out
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.bn = nn.BatchNorm2d(c_in)
        self.fc = nn.Linear(c_in, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.xavier_normal_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.conv1(x))
        x = F.relu(self.bn(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))
