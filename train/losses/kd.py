"""Offline knowledge distillation (Hinton et al., 2015): the "KD" baseline of the comparison tables.

A teacher trained first (an edge-students checkpoint) provides temperature-softened targets:

    J = (1 - alpha) * CE(s, y) + alpha * T^2 * KL(softmax(t / T) || softmax(s / T))

(batchmean KL; the ``T^2`` keeps the soft term's gradient scale independent of T, as in Hinton).
The teacher is frozen, always in eval mode (BatchNorm statistics and dropout of a trained model
must not change while the student trains) and runs under ``no_grad``; it is moved to the inputs'
device on first use, so building the loss needs no device.
"""
from __future__ import annotations

from typing import Any, Dict, Optional

import torch
import torch.nn.functional as F
from torch import nn

from train.checkpoint import load_model
from train.losses import Distiller, register_loss
from train.losses._util import teaching_target


def soft_kl(student_logits: torch.Tensor, target_logits: torch.Tensor,
            temperature: float) -> torch.Tensor:
    """``T^2 * KL(softmax(target/T) || softmax(student/T))``, batchmean. The target is detached."""
    t = float(temperature)
    log_p_student = F.log_softmax(student_logits / t, dim=1)                    # [B, C]
    log_p_target = F.log_softmax(teaching_target(target_logits) / t, dim=1)     # [B, C]
    kl = F.kl_div(log_p_student, log_p_target, reduction="batchmean", log_target=True)
    return kl * t * t


class KDLoss(Distiller):
    """``{"ce": (1 - alpha) * CE, "kd": alpha * T^2 * KL}`` with a frozen teacher; ``kd_alpha``
    is alpha."""

    needs_inputs = True

    def __init__(self, teacher: nn.Module, num_classes: int, temperature: float = 4.0,
                 kd_alpha: float = 0.9, teacher_data: Optional[Dict[str, Any]] = None) -> None:
        super().__init__()
        if not float(temperature) > 0:
            raise ValueError(f"temperature must be > 0, got {temperature!r}")
        if not 0.0 <= float(kd_alpha) <= 1.0:
            raise ValueError(f"kd_alpha must be in [0, 1], got {kd_alpha!r}")
        self.teacher = teacher.eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.num_classes = int(num_classes)
        self.temperature, self.kd_alpha = float(temperature), float(kd_alpha)
        # what the teacher was trained on: "source", "classes", "input channels", "input size"
        self.teacher_data = teacher_data

    def check_data(self, num_classes: int, in_channels: int, input_size) -> None:
        """The teacher sees the student's batches unchanged: it must have been trained on data of
        the same classes, channels and size (else a shape error in the first step)."""
        info = self.teacher_data
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
        return {"ce": (1.0 - self.kd_alpha) * F.cross_entropy(logits, targets),
                "kd": self.kd_alpha * soft}

    def extra_repr(self) -> str:
        return f"T={self.temperature}, kd_alpha={self.kd_alpha}, classes={self.num_classes}"


@register_loss("kd")
def kd(teacher: str, temperature: float = 4.0, kd_alpha: float = 0.9) -> KDLoss:
    """``teacher``: path of an edge-students checkpoint (a clear CheckpointError otherwise)."""
    model, ckpt = load_model(teacher)
    data = {"source": str(teacher), "classes": int(ckpt["num_classes"]),
            "input channels": int(ckpt["in_channels"]),
            "input size": [int(v) for v in ckpt["input_size"]]}
    return KDLoss(model, int(ckpt["num_classes"]), temperature=temperature, kd_alpha=kd_alpha,
                  teacher_data=data)
