"""The POSD paper's FLOP counter, pytorch-estimate-flops (``pthflops``), as counting rules.

The paper's Table 14 counts "the sum of floating point operations in one forward pass" with
pytorch-estimate-flops. :func:`count_paper_flops` applies the rules of its default mode
(``pthflops.count_ops(model, x)``, mode "fx", version 0.4.2) without the package: the package
imports ``distutils`` (gone from Python 3.12) and prints, and its rules fit in one function.
``tests/test_profiling.py`` checks this function against the package when it is installed.

The rules. The model is put in eval mode and traced with ``torch.fx.symbolic_trace`` (so custom
blocks are inlined down to PyTorch's own modules and functions); then, per call, with N the
batch and "out" the call's output:

- ``nn.Conv*d``: k_1 x ... x k_n x C_in x (C_out / groups) per output position, + C_out per
  output position with a bias (positions = N x output spatial size);
- ``nn.Linear``: numel(input) x out_features, + out_features with a bias (once, not per sample);
- ``nn.BatchNorm*``: 2 per output element;
- ``nn.ReLU`` (the module): 2 per output element (the comparison counts);
- ``nn.MaxPool*``: (k_1 x ... x k_n - 1) per output element;
- ``nn.AvgPool*``: k_1 x ... x k_n per output element;
- ``nn.AdaptiveAvgPool*``: H_in x W_in per output element;
- the functions ``add`` and ``mul`` (``a + b``, ``torch.add``...): numel(out) x the number of
  arguments; ``matmul``: numel(first argument) x out.shape[-1];
- everything else is 0: functional ``F.relu``, ``F.pad``, slicing, in-place ``+=``
  (``operator.iadd``), tensor methods (``x.mean()``, ``x.add(y)``), other modules.

So a multiply-accumulate counts as one operation, as in fvcore, but biases, residual additions,
ReLU modules, batch norm and pooling add to it. Its figures for the paper's models are Table 14's
to the digit: ResNet-32 0.0698 G, ResNet-110 + ResNet-32 0.3258 G, WRN-16-2 0.1018 G,
WRN-40-2 + WRN-16-2 0.4315 G.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional

import torch
import torch.fx
from torch import nn

#: the version of pytorch-estimate-flops whose rules these are
PTHFLOPS_VERSION = "0.4.2"


@dataclass(frozen=True)
class OpCount:
    total: int
    by_operator: Dict[str, int]   # rule name -> operations, summed over calls

    @property
    def giga(self) -> float:
        return self.total / 1e9


def _kernel(module: nn.Module, dims: int):
    k = module.kernel_size
    return [k] * dims if isinstance(k, int) else list(k)


def _conv(m: nn.Module, out: torch.Tensor, args) -> int:
    positions = out.shape[0] * math.prod(out.shape[2:])
    per_position = math.prod(m.kernel_size) * m.in_channels * (m.out_channels // m.groups)
    bias = m.out_channels * positions if m.bias is not None else 0
    return per_position * positions + bias


def _linear(m: Optional[nn.Module], out: torch.Tensor, args) -> int:
    bias = out.shape[-1] if isinstance(m, nn.Linear) and m.bias is not None else 0
    return args[0].numel() * out.shape[-1] + bias


def _module_rule(m: nn.Module):
    """(name, rule) for a leaf module, or None when the counter gives it 0."""
    pooling = nn.modules.pooling
    table = (
        (nn.modules.conv._ConvNd, "conv", _conv),
        (nn.ReLU, "relu", lambda m, out, args: 2 * out.numel()),
        (nn.modules.batchnorm._BatchNorm, "batch_norm", lambda m, out, args: 2 * out.numel()),
        (pooling._MaxPoolNd, "max_pool",
         lambda m, out, args: (math.prod(_kernel(m, out.dim() - 2)) - 1) * out.numel()),
        (pooling._AvgPoolNd, "avg_pool",
         lambda m, out, args: math.prod(_kernel(m, out.dim() - 2)) * out.numel()),
        (pooling._AdaptiveAvgPoolNd, "adaptive_avg_pool",
         lambda m, out, args: args[0].shape[-2] * args[0].shape[-1] * out.numel()),
        (nn.Linear, "linear", _linear),
    )
    for cls, name, rule in table:
        if isinstance(m, cls):
            return name, rule
    return None


#: functions counted by their ``__name__``, as the package matches them
_FUNCTION_RULES: Dict[str, Callable[[Any, torch.Tensor, tuple], int]] = {
    "add": lambda f, out, args: out.numel() * len(args),
    "mul": lambda f, out, args: out.numel() * len(args),
    "matmul": lambda f, out, args: _linear(None, out, args),
}


class _Counter(torch.fx.Interpreter):
    def __init__(self, gm: torch.fx.GraphModule) -> None:
        super().__init__(gm)
        self.by_operator: Dict[str, int] = {}

    def _add(self, name: str, n: int) -> None:
        if n:
            self.by_operator[name] = self.by_operator.get(name, 0) + int(n)

    def call_module(self, target, args, kwargs):
        out = super().call_module(target, args, kwargs)
        found = _module_rule(self.fetch_attr(target))
        if found is not None:
            self._add(found[0], found[1](self.fetch_attr(target), out, args))
        return out

    def call_function(self, target, args, kwargs):
        out = super().call_function(target, args, kwargs)
        name = getattr(target, "__name__", "")
        if name in _FUNCTION_RULES:
            self._add(name, _FUNCTION_RULES[name](target, out, args))
        return out


def count_paper_flops(model: nn.Module, input_size: int, in_channels: int = 3,
                      batch_size: int = 1) -> OpCount:
    """Operations of one forward pass of a zero input [batch, C, S, S], under pytorch-estimate-
    flops' rules (module docstring); the model's train/eval mode is restored afterwards."""
    if input_size < 1 or in_channels < 1 or batch_size < 1:
        raise ValueError(f"input size, channels and batch must be positive, got "
                         f"{input_size}, {in_channels}, {batch_size}")
    was_training = model.training
    model.eval()
    try:
        counter = _Counter(torch.fx.symbolic_trace(model))
        x = torch.zeros(batch_size, in_channels, input_size, input_size,
                        device=next(model.parameters()).device)
        with torch.no_grad():
            counter.run(x)
    finally:
        model.train(was_training)
    return OpCount(sum(counter.by_operator.values()), dict(counter.by_operator))
