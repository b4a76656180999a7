"""Plain cross-entropy: the paper's "W/o distillation" baseline (eq. 1-3)."""
from __future__ import annotations

from typing import Dict, Optional

import torch
import torch.nn.functional as F
from torch import nn

from train.losses import register_loss


class CELoss(nn.Module):
    needs_features = False
    needs_inputs = False
    feature_layer = "penultimate"

    def forward(self, logits: torch.Tensor, targets: torch.Tensor,
                features: Optional[torch.Tensor] = None,
                inputs: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
        return {"ce": F.cross_entropy(logits, targets)}


@register_loss("ce")
def ce() -> nn.Module:
    return CELoss()
