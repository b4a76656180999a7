"""Offline knowledge distillation (Hinton et al., 2015): the "KD" baseline of the comparison tables.

A teacher trained first (an edge-students checkpoint) provides temperature-softened targets:

    J = (1 - alpha) * CE(s, y) + alpha * T^2 * KL(softmax(t / T) || softmax(s / T))

(batchmean KL; the ``T^2`` keeps the soft term's gradient scale independent of T, as in Hinton).
The teacher is frozen, always in eval mode (BatchNorm statistics and dropout of a trained model
must not change while the student trains) and runs under ``no_grad``; it is moved to the inputs'
device on first use, so building the loss needs no device.
"""
from __future__ import annotations

from typing import Dict, Optional

import torch
import torch.nn.functional as F
from torch import nn

from train.checkpoint import load_model
from train.losses import register_loss
from train.losses._util import teaching_target


def soft_kl(student_logits: torch.Tensor, target_logits: torch.Tensor,
            temperature: float) -> torch.Tensor:
    """``T^2 * KL(softmax(target/T) || softmax(student/T))``, batchmean. The target is detached."""
    t = float(temperature)
    log_p_student = F.log_softmax(student_logits / t, dim=1)                    # [B, C]
    log_p_target = F.log_softmax(teaching_target(target_logits) / t, dim=1)     # [B, C]
    kl = F.kl_div(log_p_student, log_p_target, reduction="batchmean", log_target=True)
    return kl * t * t


class KDLoss(nn.Module):
    """``{"ce": (1 - alpha) * CE, "kd": alpha * T^2 * KL}`` with a frozen teacher."""

    needs_features = False
    needs_inputs = True
    feature_layer = "penultimate"

    def __init__(self, teacher: nn.Module, num_classes: int, temperature: float = 4.0,
                 alpha: float = 0.9) -> None:
        super().__init__()
        if not float(temperature) > 0:
            raise ValueError(f"temperature must be > 0, got {temperature!r}")
        if not 0.0 <= float(alpha) <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
        self.teacher = teacher.eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.num_classes = int(num_classes)
        self.temperature, self.alpha = float(temperature), float(alpha)

    def check_data(self, num_classes: int, in_channels: int, input_size) -> None:
        """The teacher sees the student's batches unchanged: it must have been trained on data of
        the same classes, channels and size (else a shape error in the first step)."""
        info = getattr(self, "teacher_data", None)
        if info is None:
            return
        have = {"classes": int(num_classes), "input channels": int(in_channels),
                "input size": [int(v) for v in input_size]}
        for what, value in have.items():
            if info[what] != value:
                raise ValueError(f"KD teacher {info['source']} was trained with {what} {info[what]}, but "
                                 f"this run's data has {value}; use a teacher trained on the same data "
                                 "and --input-size")

    def train(self, mode: bool = True) -> "KDLoss":
        """The loop calls ``loss.train()``; the teacher must stay in eval mode regardless."""
        super().train(mode)
        self.teacher.eval()
        return self

    def teacher_logits(self, inputs: torch.Tensor) -> torch.Tensor:
        first = next(self.teacher.parameters(), None)
        if first is not None and first.device != inputs.device:
            self.teacher.to(inputs.device)   # lazily: the loss is built before the device is known
        with torch.no_grad():
            return self.teacher(inputs.to(first.dtype) if first is not None else inputs)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor,
                features: Optional[torch.Tensor] = None,
                inputs: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
        if inputs is None:
            raise ValueError("kd needs the input batch for its teacher; got None")
        if logits.shape[1] != self.num_classes:
            raise ValueError(f"the teacher predicts {self.num_classes} classes but the student "
                             f"{logits.shape[1]}; use a teacher trained on the same classes")
        soft = soft_kl(logits, self.teacher_logits(inputs).to(logits.dtype), self.temperature)
        return {"ce": (1.0 - self.alpha) * F.cross_entropy(logits, targets),
                "kd": self.alpha * soft}

    def extra_repr(self) -> str:
        return f"T={self.temperature}, alpha={self.alpha}, classes={self.num_classes}"


@register_loss("kd")
def kd(teacher: str, temperature: float = 4.0, alpha: float = 0.9) -> nn.Module:
    """``teacher``: path of an edge-students checkpoint (a clear CheckpointError otherwise)."""
    model, ckpt = load_model(teacher)
    loss = KDLoss(model, int(ckpt["num_classes"]), temperature=temperature, alpha=alpha)
    loss.teacher_data = {"source": str(teacher), "classes": int(ckpt["num_classes"]),
                         "input channels": int(ckpt["in_channels"]),
                         "input size": [int(v) for v in ckpt["input_size"]]}
    return loss
