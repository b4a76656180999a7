"""How much a distillation term moves the weights, next to cross-entropy.

For a loss that returns weighted terms ``{"ce": J_CE, "posd": -lam V_IN}`` (or ``"oskd"``, ...),
:func:`term_grad_ratios` measures, on one batch,

    ratio(term) = || d term / d theta || / || d J_CE / d theta ||

over all trainable weights theta of the model (one flattened vector). At the POSD paper's
lam = 1e-4 with an averaged CE, the ratio is of order 1e-5 to 1e-3: the distillation term then
hardly changes the update, which is worth knowing before reading accuracy differences.

The measurement leaves no trace in the run: gradients come from ``torch.autograd.grad`` (the
parameters' ``.grad`` and the optimiser are untouched), BatchNorm running statistics and every
other buffer of the model and the loss are restored, and the random number generators are forked,
so a run with the measurement ends with the same weights as one without, and a resumed run stays
bit-identical.
"""
from __future__ import annotations

import math
from itertools import chain
from typing import Dict, Optional

import torch
from torch import nn


def _grad_norm(value: torch.Tensor, params, retain: bool) -> float:
    grads = torch.autograd.grad(value, params, retain_graph=retain, allow_unused=True)
    return math.sqrt(sum(float(g.double().square().sum()) for g in grads if g is not None))


def term_grad_ratios(model: nn.Module, loss: nn.Module, x: torch.Tensor, y: torch.Tensor,
                     tap=None) -> Dict[str, float]:
    """``{term: ||grad term|| / ||grad ce||}`` for every term of ``loss`` but "ce", on the batch
    ``(x, y)`` with the model in training mode; ``{}`` for a loss without a "ce" term or without
    other terms. ``tap`` is the :class:`train.features.FeatureTap` the loss reads, if any."""
    params = [p for p in model.parameters() if p.requires_grad]
    buffers = list(chain(model.buffers(), loss.buffers()))
    saved = [b.detach().clone() for b in buffers]
    was_training = model.training
    devices = [x.device] if x.device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices), torch.enable_grad():
            model.train()
            logits = model(x)
            feats = tap.read(logits) if tap is not None else None
            terms = loss(logits.float(), y, features=feats, inputs=x)
            if "ce" not in terms or len(terms) < 2:
                return {}
            names = list(terms)
            norms = {n: _grad_norm(terms[n], params, retain=i < len(names) - 1)
                     for i, n in enumerate(names)}
    finally:
        with torch.no_grad():
            for b, s in zip(buffers, saved):
                b.copy_(s)
        model.train(was_training)
    ce = norms["ce"]
    return {n: (v / ce if ce > 0 else float("inf")) for n, v in norms.items() if n != "ce"}


def summarise(history, key: str = "grad_ratio") -> Optional[Dict[str, Dict[str, float]]]:
    """First, last, min and max of each term's ratio over the epoch records that hold one."""
    rows = [r[key] for r in history if r.get(key)]
    if not rows:
        return None
    out = {}
    for term in rows[-1]:
        vals = [r[term] for r in rows if term in r]
        out[term] = {"first": vals[0], "last": vals[-1], "min": min(vals), "max": max(vals)}
    return out
