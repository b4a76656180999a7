"""The POSD paper's lightweight CNNs (section 4.2), exactly as published.

``cifar_cnn`` (CIFAR-10, SVHN): conv 6@5x5 -> ReLU -> maxpool 2, conv 16@5x5 -> ReLU -> maxpool 2,
FC 128 -> ReLU -> FC 64 -> ReLU -> FC 10. 63,106 parameters at 32x32 RGB: 252,424 bytes (246.5 KiB)
of fp32 weights. The paper's 248 KiB (Table 16) is the ``torch.save(state_dict)`` file in PyTorch's
original non-zip format (248.3 KiB); today's default zip container writes 250.3 KiB.

``fashion_cnn`` (Fashion-MNIST): conv 20@5x5 -> ReLU -> maxpool 2, conv 50@5x5 -> ReLU -> maxpool 2,
FC 64 -> ReLU -> FC 10. 77,484 parameters at 28x28 gray (302.7 KiB of fp32 weights); the paper's
303.9 KiB is again the non-zip state-dict file (304.2 KiB; zip format 306.1 KiB).
The paper's "10-way softmax layer" is the final FC; the softmax lives in the loss.
"""
from __future__ import annotations

from torch import nn

from train.models import register_model


def _conv_out(size: int, kernel: int = 5) -> int:
    """Spatial size after a valid 5x5 conv and a 2x2/2 max-pool."""
    out = (size - kernel + 1) // 2
    if out < 1:
        raise ValueError(f"input size {size} too small for a {kernel}x{kernel} conv + pool stage")
    return out


class LightweightCNN(nn.Module):
    head_name = "classifier"

    def __init__(self, convs, fcs, num_classes: int, in_channels: int, input_size: int) -> None:
        super().__init__()
        layers, c, s = [], in_channels, input_size
        for out_c in convs:
            layers += [nn.Conv2d(c, out_c, 5), nn.ReLU(inplace=True), nn.MaxPool2d(2, 2)]
            c, s = out_c, _conv_out(s)
        self.features = nn.Sequential(*layers)
        hidden, d = [], c * s * s
        for width in fcs:
            hidden += [nn.Linear(d, width), nn.ReLU(inplace=True)]
            d = width
        self.hidden = nn.Sequential(nn.Flatten(1), *hidden)
        self.classifier = nn.Linear(d, num_classes)

    def forward(self, x):
        return self.classifier(self.hidden(self.features(x)))


@register_model("cifar_cnn")
def cifar_cnn(num_classes: int = 10, in_channels: int = 3, input_size: int = 32) -> nn.Module:
    return LightweightCNN((6, 16), (128, 64), num_classes, in_channels, input_size)


@register_model("fashion_cnn")
def fashion_cnn(num_classes: int = 10, in_channels: int = 1, input_size: int = 28) -> nn.Module:
    return LightweightCNN((20, 50), (64,), num_classes, in_channels, input_size)
