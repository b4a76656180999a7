"""Tap the representation that POSD/OSKD read, without changing the model's output.

``layer="penultimate"`` (default) is the input of the model's classifier (``model.head_name``);
``layer="logits"`` is the output; any other value is a dotted submodule name (``layers.3``,
``features.6``) whose output is flattened to [B, D]. The tap is a forward hook installed once, so
the training step runs the ordinary ``model(x)`` and eval-mode output stays one logits tensor.
"""
from __future__ import annotations

from typing import List, Optional

import torch
from torch import nn

PENULTIMATE = "penultimate"
LOGITS = "logits"


def layer_names(model: nn.Module) -> List[str]:
    """The values ``layer`` accepts for this model."""
    return [PENULTIMATE, LOGITS] + [n for n, _ in model.named_modules() if n]


class FeatureTap:
    """Captures one layer's representation during each forward pass. ``tap.features`` -> [B, D]."""

    def __init__(self, model: nn.Module, layer: str = PENULTIMATE) -> None:
        self.layer = layer
        self.features: Optional[torch.Tensor] = None
        self._handle = None
        if layer == LOGITS:
            return
        modules = dict(model.named_modules())
        if layer == PENULTIMATE:
            head = getattr(model, "head_name", None)
            if head is None or head not in modules:
                raise ValueError(f"{type(model).__name__} does not name its classifier (head_name)")
            self._handle = modules[head].register_forward_pre_hook(self._pre_hook)
        elif layer in modules:
            self._handle = modules[layer].register_forward_hook(self._hook)
        else:
            valid = layer_names(model)
            shown = ", ".join(valid[:25]) + (" ..." if len(valid) > 25 else "")
            raise ValueError(f"unknown feature layer {layer!r}; valid: {shown}")

    def _pre_hook(self, module, args) -> None:
        self.features = args[0].flatten(1)

    def _hook(self, module, args, output) -> None:
        self.features = output.flatten(1)

    def read(self, logits: torch.Tensor) -> torch.Tensor:
        """The representation of the last forward pass ([B, D]); the logits when layer='logits'."""
        if self.layer == LOGITS:
            return logits
        if self.features is None:
            raise RuntimeError(f"feature layer {self.layer!r} was not reached in the forward pass")
        feats, self.features = self.features, None
        return feats

    def remove(self) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
