"""Loss registry: one method per file, the file name is the registry key is the CLI name.

Every loss is an ``nn.Module`` whose ``forward(logits, targets, features=None, inputs=None)``
returns a dict of *named, already weighted* terms (``{"ce": ..., "posd": ...}``); the training loop
sums and logs them and never names a method. Class attributes tell the loop what to feed:

- ``needs_features``: the loop passes the representation tapped at ``self.feature_layer``
  (see :mod:`train.features`);
- ``needs_inputs``: the loop passes the (augmented, normalised) input batch (KD's teacher and
  DML's peer read it).

A loss that owns trainable parameters (DML's peer) exposes them through ``parameters()``: the
loop optimises ``model`` and ``loss`` parameters together. Frozen ones (KD's teacher) have
``requires_grad=False`` and are skipped.
"""
from __future__ import annotations

from typing import Any, List

from torch import nn

from train.registry import Registry

LOSSES: Registry[nn.Module] = Registry("method")
register_loss = LOSSES.register


def build_loss(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered loss, e.g. ``build_loss("posd", k=2, lam=1e-4)``."""
    return LOSSES.get(name)(**kwargs)


def list_losses() -> List[str]:
    return LOSSES.names()


from train.losses import ce  # noqa: E402,F401  (registers)
from train.losses import posd  # noqa: E402,F401
from train.losses import oskd  # noqa: E402,F401
from train.losses import kd  # noqa: E402,F401
from train.losses import dml  # noqa: E402,F401
