"""``crowd_fcn``: the lightweight fully convolutional Crowd-drone classifier (POSD paper, sec. 4.2).

The paper gives the shape (four conv layers, each followed by ReLU, a max-pool after the first,
fully convolutional) but not the channels. Ours, chosen for a Jetson and documented here:

    conv1  3 -> 16, 5x5, stride 2   ReLU   max-pool 2x2     128 -> 64 -> 32
    conv2 16 -> 32, 3x3, stride 2   ReLU                     32 -> 16
    conv3 32 -> 64, 3x3, stride 2   ReLU                     16 -> 8
    conv4 64 -> C,  1x1             (the classifier)         score map, output stride 16

24,482 parameters and 7.3 M multiply-accumulates at 128x128 (limits: 100k, 0.1 G). conv4 carries
no ReLU: it produces the logits, and clipping them at zero would discard negative evidence. The
score map is averaged over space to give one logits vector per image. Because conv4 is linear,
``mean(conv4(f)) == conv4(mean(f))``: ``forward`` pools first (the classifier's input, the
representation POSD reads, is then the pooled 64-d feature), and :meth:`score_map` applies conv4
densely, which is what the edge heatmap uses on a frame larger than the training size. The
receptive field of one score-map cell is 31 px, its stride 16 px.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from train.models import register_model


class CrowdFCN(nn.Module):
    head_name = "classifier"
    fully_convolutional = True

    def __init__(self, num_classes: int = 2, in_channels: int = 3,
                 widths: Sequence[int] = (16, 32, 64)) -> None:
        super().__init__()
        if len(widths) != 3:
            raise ValueError(f"crowd_fcn takes three widths (conv1-conv3), got {list(widths)}")
        w1, w2, w3 = (int(w) for w in widths)
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, w1, 5, stride=2, padding=2), nn.ReLU(inplace=True),
            nn.MaxPool2d(2, 2),
            nn.Conv2d(w1, w2, 3, stride=2, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(w2, w3, 3, stride=2, padding=1), nn.ReLU(inplace=True),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Conv2d(w3, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x))).flatten(1)  # [B, C]

    def score_map(self, x: torch.Tensor) -> torch.Tensor:
        """Dense logits [B, C, H/16, W/16] for an input of any size >= 16 px."""
        return self.classifier(self.features(x))


@register_model("crowd_fcn")
def crowd_fcn(num_classes: int = 2, in_channels: int = 3, input_size: int = 128,
              widths: Sequence[int] = (16, 32, 64)) -> nn.Module:
    if input_size < 16:
        raise ValueError(f"crowd_fcn needs inputs of at least 16 px, got {input_size}")
    return CrowdFCN(num_classes, in_channels, widths)
