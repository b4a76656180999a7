"""What gets profiled: a student, its KD teacher and the input they see.

A :class:`Pair` names registry models (``train.models``), so any registered pair can be profiled
(``--student crowd_fcn --teacher resnet32 --input-size 128``). :func:`build` checks the names and
that the input size is possible for the model, and raises ``ValueError`` otherwise.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional, Tuple

import torch
from torch import nn

from train.models import build_model, list_models


@dataclass(frozen=True)
class Pair:
    student: str
    teacher: str
    input_size: int = 32
    num_classes: int = 10
    in_channels: int = 3
    batch_size: int = 32  # default for the memory and time tables; --batch-size overrides
    source: str = ""      # where the pair comes from ("paper Table 14", "ours")

    @property
    def label(self) -> str:
        return f"{self.teacher}->{self.student} @{self.input_size}px, {self.num_classes} classes"


# The paper's two pairs (Tables 14, 15, 17; CIFAR-10) and our students with a ResNet-32 teacher.
# Batch 32 for memory and time (the paper's smallest, and its Crowd-drone batch) keeps the default
# run of all tables under two minutes on a 2-core CPU.
DEFAULT_PAIRS: Tuple[Pair, ...] = (
    Pair("resnet32", "resnet110", source="paper"),
    Pair("wrn_16_2", "wrn_40_2", source="paper"),
    Pair("cifar_cnn", "resnet32", source="ours"),
    Pair("fashion_cnn", "resnet32", input_size=28, in_channels=1, source="ours"),
    Pair("crowd_fcn", "resnet32", input_size=128, num_classes=2, source="ours"),
)


def with_batch(pairs, batch_size: Optional[int]):
    return tuple(pairs) if batch_size is None else tuple(replace(p, batch_size=batch_size) for p in pairs)


def build(name: str, pair: Pair, num_classes: Optional[int] = None) -> nn.Module:
    """Build ``name`` for ``pair``'s input; ValueError for an unknown name or impossible size."""
    if name not in list_models():
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(list_models())}")
    if pair.input_size < 1 or pair.in_channels < 1 or pair.num_classes < 1:
        raise ValueError(f"input size, channels and classes must be positive, got {pair}")
    model = build_model(name, num_classes=num_classes or pair.num_classes,
                        in_channels=pair.in_channels, input_size=pair.input_size)
    check_input(model, name, pair)
    return model


def check_input(model: nn.Module, name: str, pair: Pair) -> None:
    """One eval forward at batch 1: turns a shape error deep in the model into a clear ValueError."""
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, pair.in_channels, pair.input_size, pair.input_size))
    except RuntimeError as e:
        raise ValueError(f"input size {pair.input_size}x{pair.input_size} with {pair.in_channels} "
                         f"channels is impossible for {name}: {str(e).splitlines()[0]}") from None
    finally:
        model.train(was_training)


def input_batch(pair: Pair, batch_size: int, device="cpu"):
    """A random batch of the pair's shape and random class targets."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch_size, pair.in_channels, pair.input_size, pair.input_size, generator=g)
    y = torch.randint(0, pair.num_classes, (batch_size,), generator=g)
    return x.to(device), y.to(device)
