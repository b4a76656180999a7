"""Parameters and multiply-accumulates, counted with fvcore.

fvcore's ``FlopCountAnalysis`` counts one *multiply-accumulate* per "flop" for convolutions and
matrix products (its documented convention), so ``count_macs`` returns MACs; FLOPs in the strict
sense are 2 x MACs. The POSD paper's own counter (Table 14) is pytorch-estimate-flops, whose
rules :mod:`profiling.paper_counter` applies; the profiling tables give both, each named.

fvcore also counts batch norm, and how depends on the module's mode: in eval mode 2 ops per
element with an affine layer (1 without), in training mode 5 (4 without). A freshly built
``nn.Module`` is in training mode, so a count taken without ``.eval()`` is larger; the tables
count in eval mode (the deployed network).

Operators fvcore has no formula for (element-wise ``add``, ``max_pool2d``, ``pad``...) are
returned in ``uncounted`` with how often each occurs, never silently taken as zero.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Dict

import torch
from torch import nn

# backward ~ 2 x forward (one product for the input gradient, one for the weight gradient): the
# usual convention; fvcore counts forward passes only.
BACKWARD_FACTOR = 2


@dataclass(frozen=True)
class MacCount:
    total: int
    by_operator: Dict[str, int]
    uncounted: Dict[str, int]
    mode: str

    @property
    def flops(self) -> int:
        return 2 * self.total


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def count_macs(model: nn.Module, input_size: int, in_channels: int = 3, mode: str = "eval",
               batch_size: int = 1) -> MacCount:
    """Forward multiply-accumulates per image (fvcore), in ``mode`` ('eval' or 'train')."""
    if mode not in ("eval", "train"):
        raise ValueError(f"mode must be 'eval' or 'train', got {mode!r}")
    with warnings.catch_warnings():          # fvcore's import scripts a loss: a torch deprecation warning
        warnings.simplefilter("ignore", FutureWarning)
        from fvcore.nn import FlopCountAnalysis

    was_training = model.training
    model.train(mode == "train")
    x = torch.zeros(batch_size, in_channels, input_size, input_size,
                    device=next(model.parameters()).device)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings; uncounted ops are returned below
            fca = FlopCountAnalysis(model, x)
            fca.unsupported_ops_warnings(False)
            fca.uncalled_modules_warnings(False)
            total = fca.total()
            by_op = dict(fca.by_operator())
            uncounted = dict(fca.unsupported_ops())
    finally:
        model.train(was_training)
    return MacCount(total // batch_size, {k: v // batch_size for k, v in by_op.items()},
                    uncounted, mode)


def training_macs(trained_forward: int, frozen_forward: int = 0) -> int:
    """MACs of one training step per image: forward + backward of what trains + frozen forwards."""
    return (1 + BACKWARD_FACTOR) * trained_forward + frozen_forward
