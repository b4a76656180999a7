"""``--ema DECAY``: an exponential moving average of the weights (weight averaging).

The averaged copy follows the trained model after every optimiser step,

    avg <- d * avg + (1 - d) * w,    d = min(DECAY, (1 + n) / (10 + n))

for the n-th update (n = 1, 2, ...), over every floating-point tensor of the state dict,
BatchNorm's running statistics included; integer buffers (BatchNorm's batch counter) are copied.
It is the rule of timm's ``ModelEmaV2`` with the warm-up of TensorFlow's
``ExponentialMovingAverage`` (``num_updates``). The warm-up keeps the random initial weights from
lingering in the average of a short run: 1 - d = 9 / (10 + n), so the average spans about the
last ninth of the steps so far, up to 1 / (1 - DECAY) steps.

Training itself is unchanged: the optimiser sees only the trained weights, so a run with
``--ema`` trains bit for bit as the same run without it. What changes is which weights the run
evaluates and saves: with ``--ema``, the per-epoch test accuracy and validation, ``best.pt`` and
``model.pt`` are the averaged weights, and ``state.pt`` holds both (the trained weights to go on
training, the average under ``train_state["ema"]``), so ``--resume`` stays bit-identical.

An average over the last few epochs steadies what the weights do on data unlike the training
set, which moves from epoch to epoch more than the synthetic test accuracy shows
(docs/builtin_model.md).
"""
from __future__ import annotations

import copy
from typing import Any, Dict

import torch
from torch import nn


def check_decay(decay: float) -> float:
    """``decay`` if it is 0 (no averaging) or a usable decay (0 < decay < 1), else a ValueError
    naming the flag."""
    if not (isinstance(decay, (int, float)) and 0.0 <= float(decay) < 1.0):
        raise ValueError(f"--ema must be 0 (off) or a decay between 0 and 1 (e.g. 0.9998), got {decay}")
    return float(decay)


class WeightAverage:
    """The averaged copy of ``model`` (:attr:`model`, in eval mode, no gradients)."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = check_decay(decay)
        if self.decay == 0.0:
            raise ValueError("--ema 0 means no average: do not build one")
        self.model = copy.deepcopy(model).eval()
        for m in self.model.modules():       # a feature tap's hooks belong to the trained model
            m._forward_hooks.clear()
            m._forward_pre_hooks.clear()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.updates = 0

    def rate(self) -> float:
        """The decay of the next update."""
        n = self.updates + 1
        return min(self.decay, (1.0 + n) / (10.0 + n))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        d = self.rate()
        self.updates += 1
        mine = self.model.state_dict()
        for name, w in model.state_dict().items():
            avg = mine[name]
            if avg.dtype.is_floating_point:
                avg.mul_(d).add_(w.detach(), alpha=1.0 - d)
            else:
                avg.copy_(w)

    def state_dict(self) -> Dict[str, Any]:
        return {"decay": self.decay, "updates": self.updates, "weights": self.model.state_dict()}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        if float(state["decay"]) != self.decay:
            raise ValueError(f"the saved average has decay {state['decay']}, this run {self.decay}")
        self.model.load_state_dict(state["weights"])
        self.updates = int(state["updates"])
