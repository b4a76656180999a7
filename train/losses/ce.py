"""Plain cross-entropy: the paper's "W/o distillation" baseline (eq. 1-3)."""
from __future__ import annotations

from typing import Dict, Optional

import torch
import torch.nn.functional as F

from train.losses import Distiller, register_loss
from train.losses._util import check_ce_reduction


@register_loss("ce")
class CELoss(Distiller):
    def __init__(self, ce_reduction: str = "mean") -> None:
        super().__init__()
        self.ce_reduction = check_ce_reduction(ce_reduction)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor,
                features: Optional[torch.Tensor] = None,
                inputs: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
        return {"ce": F.cross_entropy(logits, targets, reduction=self.ce_reduction)}
