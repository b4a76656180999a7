"""torchvision's ImageNet ResNet-50, used by the paper for Tiny-ImageNet (64x64, 200 classes).

Unchanged torchvision architecture (7x7/2 stem, max-pool, bottleneck stages, global pool), randomly
initialised: no pre-trained weights are fetched.
"""
from __future__ import annotations

from torch import nn

from train.models import register_model


@register_model("resnet50")
def resnet50(num_classes: int = 200, in_channels: int = 3, input_size: int = 64) -> nn.Module:
    from torchvision.models import resnet50 as tv_resnet50

    model = tv_resnet50(weights=None, num_classes=num_classes)
    if in_channels != 3:
        model.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
    model.head_name = "fc"
    return model
