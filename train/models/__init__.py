"""Model registry: the registered name is the CLI name (``--model NAME``).

Every model returns one logits tensor from ``forward`` and names its classifier module in
``head_name``, so the representation POSD/OSKD read (the classifier's input) can be tapped with a
hook without changing the output (see :mod:`train.features`).
"""
from __future__ import annotations

from typing import Any, List

from torch import nn

from train.registry import Registry

MODELS: Registry[nn.Module] = Registry("model")
register_model = MODELS.register


def build_model(name: str, num_classes: int = 10, **kwargs: Any) -> nn.Module:
    """Build a registered model, e.g. ``build_model("resnet32", num_classes=100)``."""
    model = MODELS.get(name)(num_classes=num_classes, **kwargs)
    model.arch_name = name
    return model


def list_models() -> List[str]:
    return MODELS.names()


# importing the modules registers their models
from train.models import crowd, lightweight, resnet_cifar, torchvision_models, wrn  # noqa: E402,F401
