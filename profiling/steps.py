"""The training steps the memory and time tables measure: what ``python -m train`` runs.

Each step is one optimiser iteration of one method, built by the trainer's own builder,
:func:`train.build.build_parts`, from the :class:`TrainConfig` that :func:`step_config` writes
for it: the student from ``train.models``, the loss from ``train.losses`` (with the networks it
holds), the feature tap the loss reads and the optimiser of the training defaults (SGD, lr 1e-3,
momentum 0.9). So the tables move when the training code does, and only then.

- ``ce``:   the student trained with cross-entropy (no distillation);
- ``posd``: ``train.losses.posd`` on the penultimate features (k = 2 neighbours in the batch,
  power kernel d = 2, ``J = J_CE - lambda * V_IN``): the fused V_IN training runs, through the
  native kernel on CPU where :mod:`train.native` is built;
- ``kd_teacher``: phase 1 of offline KD, the teacher trained with cross-entropy;
- ``kd_student``: phase 2, ``train.losses.kd``: the frozen teacher's forward in eval mode under
  ``no_grad`` + the student with Hinton's loss (T = 4, alpha = 0.9). The teacher is a randomly
  initialised network written as a checkpoint, which the KD builder loads as training loads a
  trained one;
- ``dml``: ``train.losses.dml``: the student and a peer of the same architecture trained
  together, each with CE + KL towards the other's detached output.

A step is ``zero_grad(set_to_none=True)``, the forward, the loss's terms, the backward of their
sum and the optimiser step on a random batch of the pair's shape; the loop's data path
(augmentation, normalisation) is not in it. SGD momentum buffers exist before the first step (as
they do after any first step), so every call costs what a steady-state step costs.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List

import torch
from torch import nn

from edge.contract import Preprocess
from profiling.specs import Pair, build, input_batch
from train.build import DataShape, TrainingParts, build_parts
from train.checkpoint import build_checkpoint, save_checkpoint
from train.config import TrainConfig

METHODS = ("ce", "posd", "kd_teacher", "kd_student", "dml")
#: the training method (``--method``) each step runs
LOSS_OF = {"ce": "ce", "posd": "posd", "kd_teacher": "ce", "kd_student": "kd", "dml": "dml"}


@dataclass
class Step:
    """One method's training step with everything it holds, ready to call."""
    method: str
    run: Callable[[], torch.Tensor]
    parts: TrainingParts
    inputs: List[torch.Tensor]
    batch_size: int
    device: str
    extra: Dict[str, object] = field(default_factory=dict)

    @property
    def trained(self) -> List[nn.Module]:
        """The networks the step trains: the student, and a loss's own trainable one (DML's peer)."""
        return [self.parts.model] + [m for m in self.parts.loss.children() if _trains(m)]

    @property
    def frozen(self) -> List[nn.Module]:
        """The loss's networks that do not train (KD's teacher)."""
        return [m for m in self.parts.loss.children() if not _trains(m)]

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        return self.parts.optimizer


def _trains(module: nn.Module) -> bool:
    return any(p.requires_grad for p in module.parameters())


def step_config(method: str, pair: Pair, lam: float = 1e-4, k: int = 2) -> TrainConfig:
    """The training configuration of ``method``'s step on ``pair``; ``kd_student`` also needs
    the ``teacher`` checkpoint (:func:`save_teacher`)."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; valid: {', '.join(METHODS)}")
    model = pair.teacher if method == "kd_teacher" else pair.student
    return TrainConfig(model=model, method=LOSS_OF[method], knn=k, lam=lam)


def save_teacher(pair: Pair, path: Path) -> Path:
    """``pair.teacher``, randomly initialised, as a checkpoint for the pair's data."""
    if pair.in_channels not in (1, 3):
        raise ValueError(f"KD needs a teacher checkpoint, whose images are gray (1 channel) or "
                         f"RGB (3 channels); the pair has {pair.in_channels} channels")
    c, size = pair.in_channels, pair.input_size
    pre = Preprocess(size=(size, size), mean=(0.5,) * c, std=(0.25,) * c,
                     channel_order="GRAY" if c == 1 else "RGB")
    ckpt = build_checkpoint(build(pair.teacher, pair), arch=pair.teacher,
                            arch_kwargs={"in_channels": c, "input_size": size},
                            class_names=[f"class{i}" for i in range(pair.num_classes)],
                            input_size=[size, size], in_channels=c, preprocess=pre.to_dict(),
                            method="ce")
    return save_checkpoint(ckpt, path)


def make_step(method: str, pair: Pair, batch_size: int, device: str = "cpu", lam: float = 1e-4,
              k: int = 2) -> Step:
    cfg = step_config(method, pair, lam, k)
    build(cfg.model, pair)   # an input the model cannot take: a clear ValueError, not a failed step
    shape = DataShape(pair.num_classes, pair.in_channels, (pair.input_size, pair.input_size))
    with tempfile.TemporaryDirectory() as tmp:   # the KD builder loads its teacher at once
        if method == "kd_student":
            cfg = cfg.replace(teacher=str(save_teacher(pair, Path(tmp) / "teacher.pt")))
        parts = build_parts(cfg, shape, torch.device(device))
    model, loss, tap, opt = parts.model.train(), parts.loss.train(), parts.tap, parts.optimizer
    for group in opt.param_groups:   # the state SGD holds after its first step
        for p in group["params"]:
            opt.state[p]["momentum_buffer"] = torch.zeros_like(p)
    x, y = input_batch(pair, batch_size, device)

    def run() -> torch.Tensor:
        opt.zero_grad(set_to_none=True)
        logits = model(x)
        terms = loss(logits, y, features=tap.read(logits) if tap is not None else None, inputs=x)
        total = sum(terms.values())
        total.backward()
        opt.step()
        return total.detach()

    return Step(method, run, parts, [x, y], batch_size, device,
                {"model": cfg.model, "teacher": pair.teacher if method == "kd_student" else None})
