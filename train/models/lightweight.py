"""The POSD paper's lightweight CNNs (section 4.2), exactly as published.

``cifar_cnn`` (CIFAR-10, SVHN): conv1 6@5x5 -> ReLU -> maxpool 2, conv2 16@5x5 -> ReLU -> maxpool
2, fc1 128 -> ReLU -> fc2 64 -> ReLU -> fc3 10. 63,106 parameters at 32x32 RGB: 252,424 bytes
(246.5 KiB) of fp32 weights.

``fashion_cnn`` (Fashion-MNIST): conv1 20@5x5 -> ReLU -> maxpool 2, conv2 50@5x5 -> ReLU ->
maxpool 2, fc1 64 -> ReLU -> fc2 10. 77,484 parameters at 28x28 gray (302.7 KiB of fp32 weights).
The paper's "10-way softmax layer" is the final FC; the softmax lives in the loss.

The layers carry the conventional names of PyTorch's CIFAR-10 tutorial network (conv1, conv2,
fc1, fc2, fc3); ReLU and max-pooling are function calls, so no other module appears in the state
dict or its version metadata. The paper's Table 16 sizes, 248 KiB and 303.9 KiB, are
``torch.save(model.state_dict())`` files of exactly these modules in PyTorch's original non-zip
format (``_use_new_zipfile_serialization=False``): 253,963 B = 248.01 KiB and 311,237 B =
303.94 KiB. A state-dict file stores every key and module name, so the names are part of its
size: under the previous names (``features.0``, ``hidden.1``, ...) the same weights wrote 248.3
and 304.2 KiB. Today's default zip container writes about 2 KiB more (250.0 and 305.8 KiB).

Checkpoints saved before the rename (``features.0``, ``features.3``, ``hidden.1``, ``hidden.3``,
``classifier``) still load: :func:`legacy_keys` maps the old module names to the new ones
whenever a state dict is loaded into these models (resume, export, evaluation).
"""
from __future__ import annotations

from functools import partial
from typing import Dict, Mapping, MutableMapping, Sequence

import torch.nn.functional as F
from torch import nn

from train.models import register_model


def _conv_out(size: int, kernel: int = 5) -> int:
    """Spatial size after a valid 5x5 conv and a 2x2/2 max-pool."""
    out = (size - kernel + 1) // 2
    if out < 1:
        raise ValueError(f"input size {size} too small for a {kernel}x{kernel} conv + pool stage")
    return out


def legacy_keys(n_fc: int) -> Dict[str, str]:
    """Old module name -> new, for a net with ``n_fc`` fully connected layers (the last one is
    the classifier): the two convs sat in ``features`` (indices 0 and 3, after conv-ReLU-pool),
    the hidden FCs in ``hidden`` (after a Flatten at index 0, each followed by a ReLU)."""
    names = {"features.0": "conv1", "features.3": "conv2", "classifier": f"fc{n_fc}"}
    names.update({f"hidden.{1 + 2 * j}": f"fc{j + 1}" for j in range(n_fc - 1)})
    return names


def rename_legacy_keys(state_dict: MutableMapping, names: Mapping[str, str], prefix: str = "") -> None:
    """Rename, in place, the keys of ``state_dict`` under ``prefix`` that use an old module name.
    A key whose new name is already present is left alone (load_state_dict then reports it)."""
    for key in [k for k in state_dict if k.startswith(prefix)]:
        module, _, param = key[len(prefix):].rpartition(".")
        new = names.get(module)
        if new is not None and prefix + new + "." + param not in state_dict:
            state_dict[prefix + new + "." + param] = state_dict.pop(key)


def _load_hook(names, module, state_dict, prefix, *_) -> None:
    rename_legacy_keys(state_dict, names, prefix)


class LightweightCNN(nn.Module):
    def __init__(self, convs: Sequence[int], fcs: Sequence[int], num_classes: int,
                 in_channels: int, input_size: int) -> None:
        super().__init__()
        if len(convs) != 2:
            raise ValueError(f"the lightweight nets have two conv layers, got {list(convs)}")
        s = _conv_out(_conv_out(input_size))
        # parameters in the order of the previous layout, so saved optimiser states still match
        self.conv1 = nn.Conv2d(in_channels, convs[0], 5)
        self.conv2 = nn.Conv2d(convs[0], convs[1], 5)
        widths = [convs[1] * s * s, *fcs, num_classes]
        self.n_fc = len(widths) - 1
        for i in range(self.n_fc):
            setattr(self, f"fc{i + 1}", nn.Linear(widths[i], widths[i + 1]))
        self.head_name = f"fc{self.n_fc}"
        self.register_load_state_dict_pre_hook(partial(_load_hook, legacy_keys(self.n_fc)))

    def upgrade_state_dict(self, state_dict: MutableMapping) -> MutableMapping:
        """``state_dict`` with the previous layer names (``features.0``, ``hidden.1``,
        ``classifier``) renamed to today's, as loading does."""
        rename_legacy_keys(state_dict, legacy_keys(self.n_fc))
        return state_dict

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2).flatten(1)
        for i in range(1, self.n_fc):
            x = F.relu(getattr(self, f"fc{i}")(x))
        return getattr(self, self.head_name)(x)


@register_model("cifar_cnn")
def cifar_cnn(num_classes: int = 10, in_channels: int = 3, input_size: int = 32) -> nn.Module:
    return LightweightCNN((6, 16), (128, 64), num_classes, in_channels, input_size)


@register_model("fashion_cnn")
def fashion_cnn(num_classes: int = 10, in_channels: int = 1, input_size: int = 28) -> nn.Module:
    return LightweightCNN((20, 50), (64,), num_classes, in_channels, input_size)
