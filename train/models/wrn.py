"""Pre-activation Wide ResNets (Zagoruyko & Komodakis, 2016): WRN-depth-k.

depth = 6n + 4 (WRN-20-8, used by ONE/FFL, counts 6n + 2: n = 3); groups of n blocks at widths 16k, 32k, 64k; BN-ReLU before each conv; a 1x1
projection shortcut where the shape changes; final BN-ReLU, global average pool, FC.
Parameters with 10 classes: WRN-16-2 0.69 M, WRN-40-2 2.24 M (2.26 M with a 100-class head).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from train.models import register_model


class PreActBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, dropout: float) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.dropout = dropout
        self.shortcut = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Conv2d(cin, cout, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o = F.relu(self.bn1(x))
        sc = x if self.shortcut is None else self.shortcut(o)
        o = self.conv1(o)
        o = F.relu(self.bn2(o))
        if self.dropout > 0:
            o = F.dropout(o, self.dropout, self.training)
        return self.conv2(o) + sc


class WideResNet(nn.Module):
    head_name = "fc"

    def __init__(self, depth: int, widen: int, num_classes: int = 10, in_channels: int = 3,
                 dropout: float = 0.0) -> None:
        super().__init__()
        if (depth - 4) % 6 == 0:
            n = (depth - 4) // 6
        elif (depth - 2) % 6 == 0:
            # WRN-20-8 as used by the online-KD literature (ONE, FFL): 6n+2 counting, n = 3
            n = (depth - 2) // 6
        else:
            raise ValueError(f"WRN depth must be 6n+4 (or 6n+2), got {depth}")
        widths = (16 * widen, 32 * widen, 64 * widen)
        self.conv1 = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
        blocks, cin = [], 16
        for i, cout in enumerate(widths):
            for j in range(n):
                blocks.append(PreActBlock(cin, cout, 2 if (i > 0 and j == 0) else 1, dropout))
                cin = cout
        self.layers = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(cin)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers(self.conv1(x))
        x = self.pool(F.relu(self.bn(x))).flatten(1)  # [B, 64k]
        return self.fc(x)


def _make(depth: int, widen: int):
    def ctor(num_classes: int = 10, in_channels: int = 3, input_size: int = 32,
             dropout: float = 0.0) -> nn.Module:
        return WideResNet(depth, widen, num_classes, in_channels, dropout)
    return ctor


for _d, _k in ((16, 2), (40, 2), (28, 10), (20, 8)):
    register_model(f"wrn_{_d}_{_k}")(_make(_d, _k))
