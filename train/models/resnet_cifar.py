"""CIFAR ResNets of He et al. (2016, sec. 4.2): depth 6n+2, widths 16/32/64, 3x3 convs.

Shortcut: option A by default (identity; when the shape changes, a stride-2 subsample padded
with zero channels, no parameters), as in the original CIFAR experiments. This gives ResNet-32
0.46 M and ResNet-110 1.73 M parameters (the POSD paper's Table 14: 0.5 M and 1.7 M).
``shortcut="B"`` uses 1x1 projection convolutions instead.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from train.models import register_model


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, shortcut: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.pad = 0
        self.proj = None
        if stride != 1 or cin != cout:
            if shortcut == "A":
                self.pad = cout - cin
            else:
                self.proj = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                          nn.BatchNorm2d(cout))
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.proj is not None:
            sc = self.proj(x)
        elif self.pad or self.stride != 1:
            sc = x[:, :, ::self.stride, ::self.stride]
            sc = F.pad(sc, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))
        else:
            sc = x
        return F.relu(out + sc)


class CifarResNet(nn.Module):
    head_name = "fc"

    def __init__(self, depth: int, num_classes: int = 10, in_channels: int = 3,
                 shortcut: str = "A") -> None:
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        if shortcut not in ("A", "B"):
            raise ValueError(f"shortcut must be 'A' or 'B', got {shortcut!r}")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        blocks, cin = [], 16
        for i, cout in enumerate((16, 32, 64)):
            for j in range(n):
                blocks.append(BasicBlock(cin, cout, 2 if (i > 0 and j == 0) else 1, shortcut))
                cin = cout
        self.layers = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.pool(self.layers(x)).flatten(1)  # [B, 64]
        return self.fc(x)


def _make(depth: int):
    def ctor(num_classes: int = 10, in_channels: int = 3, input_size: int = 32,
             shortcut: str = "A") -> nn.Module:
        return CifarResNet(depth, num_classes, in_channels, shortcut)
    return ctor


for _depth in (20, 32, 56, 110):
    register_model(f"resnet{_depth}")(_make(_depth))
