"""Plain training steps for the memory and time tables, written out here on purpose.

Each step is one SGD iteration of one method, independent of ``train.losses`` so the profile does
not move when a loss is refactored:

- ``ce``:   student forward + backward + SGD step (no distillation);
- ``posd``: the same, plus V_IN on the penultimate features (POSD paper eq. 11, kNN inside the
  batch, power kernel ``K(a, b) = -||a - b||^d``, d = 2): ``J = J_CE - lambda * V_IN``;
- ``kd_teacher``: phase 1 of offline KD, training the teacher with CE (a ``ce`` step of the
  teacher);
- ``kd_student``: phase 2, the frozen teacher's forward in eval mode under ``no_grad`` + the
  student's forward/backward with Hinton's loss (T = 4, alpha = 0.9);
- ``dml``: two peers (two copies of the student architecture) trained together, each with CE +
  KL towards the other's detached output.

Every step starts with ``zero_grad(set_to_none=True)``; SGD momentum buffers exist before the
first step (as they do after any first step), so every call costs what a steady-state step costs.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List

import torch
import torch.nn.functional as F
from torch import nn

from profiling.specs import Pair, build, input_batch
from train.features import FeatureTap

METHODS = ("ce", "posd", "kd_teacher", "kd_student", "dml")


@dataclass
class Step:
    """One method's training step with everything it holds, ready to call."""
    method: str
    run: Callable[[], torch.Tensor]
    trained: List[nn.Module]
    frozen: List[nn.Module]
    optimizer: torch.optim.Optimizer
    inputs: List[torch.Tensor]
    batch_size: int
    device: str
    extra: Dict[str, object] = field(default_factory=dict)


def v_in(features: torch.Tensor, k: int = 2, d: float = 2.0) -> torch.Tensor:
    """V_IN of POSD eq. 11: 1/N^2 sum_p sum_{a,b in G_p} -||y_a - y_b||^d, G_p = p + its kNN."""
    n = features.shape[0]
    with torch.no_grad():  # the neighbour selection carries no gradient
        idx = torch.cdist(features, features).topk(k + 1, largest=False).indices  # [B, k+1]
    group = features[idx]                                                   # [B, k+1, D]
    dist = (group[:, :, None] - group[:, None]).pow(2).sum(-1).clamp_min(1e-12).sqrt()  # [B, k+1, k+1]
    return -dist.pow(d).sum() / n ** 2


def kd_loss(student_logits, teacher_logits, targets, temperature=4.0, alpha=0.9):
    """Hinton et al.: alpha * T^2 * KL(p_T || p_S) + (1 - alpha) * CE."""
    kl = F.kl_div(F.log_softmax(student_logits / temperature, 1),
                  F.softmax(teacher_logits / temperature, 1), reduction="batchmean")
    return alpha * temperature ** 2 * kl + (1 - alpha) * F.cross_entropy(student_logits, targets)


def _sgd(modules, lr=1e-3):
    params = [p for m in modules for p in m.parameters()]
    opt = torch.optim.SGD(params, lr=lr, momentum=0.9)
    for p in params:  # the state SGD holds after its first step
        opt.state[p]["momentum_buffer"] = torch.zeros_like(p)
    return opt


def make_step(method: str, pair: Pair, batch_size: int, device: str = "cpu", lam: float = 1e-4,
              k: int = 2) -> Step:
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; valid: {', '.join(METHODS)}")
    x, y = input_batch(pair, batch_size, device)
    trained_name = pair.teacher if method == "kd_teacher" else pair.student
    net = build(trained_name, pair).to(device).train()
    trained, frozen = [net], []
    if method == "dml":
        trained.append(build(pair.student, pair).to(device).train())
    if method == "kd_student":
        teacher = build(pair.teacher, pair).to(device).eval().requires_grad_(False)
        frozen.append(teacher)
    opt = _sgd(trained)
    tap = FeatureTap(net) if method == "posd" else None

    def run() -> torch.Tensor:
        opt.zero_grad(set_to_none=True)
        if method == "kd_student":
            with torch.no_grad():
                t_logits = frozen[0](x)
            loss = kd_loss(net(x), t_logits, y)
        elif method == "dml":
            a, b = trained[0](x), trained[1](x)
            loss = (F.cross_entropy(a, y) + F.kl_div(F.log_softmax(a, 1), F.softmax(b.detach(), 1),
                                                     reduction="batchmean")
                    + F.cross_entropy(b, y) + F.kl_div(F.log_softmax(b, 1),
                                                       F.softmax(a.detach(), 1), reduction="batchmean"))
        else:
            logits = net(x)
            loss = F.cross_entropy(logits, y)
            if tap is not None:
                loss = loss - lam * v_in(tap.read(logits), k=k)
        loss.backward()
        opt.step()
        return loss.detach()

    return Step(method, run, trained, frozen, opt, [x, y], batch_size, device,
                {"model": trained_name, "teacher": pair.teacher if frozen else None})
