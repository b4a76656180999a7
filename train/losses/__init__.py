"""Loss registry: one method per file, the file name is the registry key is the CLI name.

Every loss is a :class:`Distiller`: the contract below is all the training loop (and profiling)
relies on, so the loop never names a method.

A registered builder's keyword parameters are settings under their ``TrainConfig`` (and CLI) names
(``knn``, ``lam``, ``kernel_d``, ``feature_layer``, ``qmi``, ``ce_reduction``, ``teacher``,
``temperature``, ``kd_alpha``, ``peer_model``) or facts of the data (``num_classes``,
``in_channels``, ``input_size``): one name per setting from the command line to the loss.
:func:`loss_settings` lists them, and ``train.build`` passes exactly those.
"""
from __future__ import annotations

import abc
import inspect
from typing import Any, Dict, List, Optional

import torch
from torch import nn

from train.registry import Registry


class Distiller(nn.Module, metaclass=abc.ABCMeta):
    """The base class of every loss in ``train/losses``.

    ``forward(logits, targets, features=None, inputs=None)`` returns a dict of *named, already
    weighted* scalar terms (``{"ce": ..., "posd": ...}``); the loop sums them, back-propagates the
    sum and logs each term, and ``train.grad_ratio`` compares every term with the one named
    ``"ce"``. The arguments: ``logits`` [B, C] (float32), ``targets`` [B] class indices,
    ``features`` the representation tapped at :attr:`feature_layer` ([B, D], see
    :mod:`train.features`) when :attr:`needs_features` is set, else None, and ``inputs`` the
    (augmented, normalised) input batch [B, C, H, W].

    Class attributes tell the loop what to prepare (an instance may override them):

    - :attr:`needs_features`: tap :attr:`feature_layer` and pass ``features``;
    - :attr:`needs_inputs`: the loss reads ``inputs`` (KD's teacher and DML's peer run on them),
      so under DDP it cannot take the batch gathered across ranks (``--knn-scope global``).

    Trainable parameters of the loss (DML's peer) are optimised with the model's: the loop
    optimises every ``parameters()`` of model and loss that requires grad. Frozen ones (KD's
    teacher) have ``requires_grad=False``.
    """

    needs_features: bool = False
    needs_inputs: bool = False
    feature_layer: str = "penultimate"

    def check_data(self, num_classes: int, in_channels: int, input_size) -> None:
        """Raise ValueError if the loss cannot train on data of these classes, channels and
        [H, W] size. Any data fits a loss that holds no trained network (this default)."""

    @abc.abstractmethod
    def forward(self, logits: torch.Tensor, targets: torch.Tensor,
                features: Optional[torch.Tensor] = None,
                inputs: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
        """The named, weighted terms of the loss (see the class docstring)."""


LOSSES: Registry[Distiller] = Registry("method")
register_loss = LOSSES.register


def build_loss(name: str, **kwargs: Any) -> Distiller:
    """Build a registered loss, e.g. ``build_loss("posd", knn=2, lam=1e-4)``."""
    return LOSSES.get(name)(**kwargs)


def loss_settings(name: str) -> Dict[str, Any]:
    """The keyword parameters of loss ``name``'s builder with their defaults (None: required)."""
    params = inspect.signature(LOSSES.get(name)).parameters
    return {k: None if p.default is inspect.Parameter.empty else p.default for k, p in params.items()}


def list_losses() -> List[str]:
    return LOSSES.names()


from train.losses import ce  # noqa: E402,F401  (registers)
from train.losses import posd  # noqa: E402,F401
from train.losses import oskd  # noqa: E402,F401
from train.losses import kd  # noqa: E402,F401
from train.losses import dml  # noqa: E402,F401
