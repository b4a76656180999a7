"""Deep Mutual Learning (Zhang et al., 2018) with one peer: the online-KD baseline for the cost
comparison.

The peer is a submodule of the loss, so the loop's single optimiser over ``model`` and ``loss``
parameters trains both networks jointly. Each network learns from the labels and from the other's
(detached) prediction:

    student: CE(s, y) + KL(p_peer || p_student)      peer: CE(q, y) + KL(p_student || p_peer)

Each KL only reaches the network it teaches, because its target goes through
:func:`teaching_target`. With ``temperature`` T != 1 the KL is taken between softened outputs and
scaled by T^2 (as in KD); T = 1, the paper's setting, is plain DML.
"""
from __future__ import annotations

from typing import Dict, Optional

import torch
import torch.nn.functional as F
from torch import nn

from train.losses import Distiller, register_loss
from train.losses.kd import soft_kl
from train.models import build_model


class DMLLoss(Distiller):
    """``{"ce", "dml", "peer_ce", "peer_dml"}``; the peer is trained through ``parameters()``."""

    needs_inputs = True

    def __init__(self, peer: nn.Module, temperature: float = 1.0) -> None:
        super().__init__()
        if not float(temperature) > 0:
            raise ValueError(f"temperature must be > 0, got {temperature!r}")
        self.peer = peer
        self.temperature = float(temperature)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor,
                features: Optional[torch.Tensor] = None,
                inputs: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
        if inputs is None:
            raise ValueError("dml needs the input batch for its peer; got None")
        peer_logits = self.peer(inputs)                                   # [B, C]
        if peer_logits.shape != logits.shape:
            raise ValueError(f"peer logits {list(peer_logits.shape)} do not match the student's "
                             f"{list(logits.shape)}; build the peer with the same num_classes")
        t = self.temperature
        return {"ce": F.cross_entropy(logits, targets),
                "dml": soft_kl(logits, peer_logits, t),
                "peer_ce": F.cross_entropy(peer_logits, targets),
                "peer_dml": soft_kl(peer_logits, logits, t)}

    def extra_repr(self) -> str:
        return f"T={self.temperature}"


@register_loss("dml")
def dml(peer_model: str, num_classes: int, in_channels: int = 3, input_size: int = 32,
        temperature: float = 1.0) -> DMLLoss:
    """``peer_model``: the peer's registered architecture."""
    peer = build_model(peer_model, num_classes=num_classes, in_channels=in_channels,
                       input_size=input_size)
    return DMLLoss(peer, temperature=temperature)
