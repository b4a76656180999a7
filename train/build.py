"""What a run is built from a :class:`TrainConfig`: the device, the data, the student, its loss
(with the networks a loss holds: KD's teacher, DML's peer), the feature tap the loss reads, the
optimiser and its schedule.

One builder for everyone who needs these objects: the training loop (:mod:`train.engine`) and
the profiling of training steps (:mod:`profiling.steps`, so the tables measure what training
runs); other tools take them from here, not from the loop. Nothing here trains or writes files.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import torch
from torch import nn

from train.config import TrainConfig
from train.data import DataSplits, build_dataset
from train.features import FeatureTap
from train.losses import Distiller, build_loss, loss_settings
from train.models import MODELS, build_model


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda requested but no CUDA device is available")
    if name not in ("cpu",) and not name.startswith("cuda"):
        raise ValueError(f"--device must be auto, cpu or cuda[:N], got {name!r}")
    return torch.device(name)


def load_data(cfg: TrainConfig) -> DataSplits:
    if cfg.data:
        from train.data.builtin import folder_dataset

        size = cfg.input_size or _model_default_size(cfg.model)
        return folder_dataset(cfg.data, size, augment=cfg.augment, name=Path(cfg.data).name)
    return build_dataset(cfg.dataset, root=cfg.data_root, download=cfg.download,
                         synth_size=cfg.synth_size, synth_seed=cfg.synth_seed,
                         synth_version=cfg.synth_version,
                         input_size=cfg.input_size)


def _model_default_size(model: str) -> int:
    default = inspect.signature(MODELS.get(model)).parameters.get("input_size")
    return int(default.default) if default is not None else 128


@dataclass(frozen=True)
class DataShape:
    """What the builders read of the data: its classes, channels and [H, W] input size."""
    num_classes: int
    in_channels: int
    input_size: Tuple[int, int]

    @classmethod
    def of(cls, data: DataSplits) -> "DataShape":
        h, w = data.input_size
        return cls(data.num_classes, data.in_channels, (int(h), int(w)))


def model_kwargs(cfg: TrainConfig, shape: DataShape) -> Dict[str, Any]:
    """Keyword arguments of the architecture, as stored in the checkpoint."""
    kwargs = {"in_channels": shape.in_channels, "input_size": int(shape.input_size[0])}
    kwargs.update(dict(cfg.model_kwargs))
    return kwargs


def loss_kwargs(cfg: TrainConfig, shape: DataShape) -> Dict[str, Any]:
    """The settings ``cfg.method``'s builder takes, each under its config name, from ``cfg`` or
    the data (``train.losses.loss_settings``); a None leaves the builder's default."""
    settings = loss_settings(cfg.method)
    if cfg.ce_reduction != "mean" and "ce_reduction" not in settings:
        raise ValueError(f"--ce-reduction {cfg.ce_reduction}: {cfg.method} averages its CE; "
                         "ce, posd and oskd take --ce-reduction sum")
    facts = {"num_classes": shape.num_classes, "in_channels": shape.in_channels,
             "input_size": int(shape.input_size[0]), "peer_model": cfg.peer_model or cfg.model}
    values = {name: facts[name] if name in facts else getattr(cfg, name) for name in settings}
    return {name: v for name, v in values.items() if v is not None}


def effective_loss_kwargs(cfg: TrainConfig, shape: DataShape) -> Dict[str, Any]:
    """What the method actually runs with: the given values over the builder's defaults."""
    out = {name: v for name, v in loss_settings(cfg.method).items() if v is not None}
    out.update(loss_kwargs(cfg, shape))
    return out


def build_optimizer(cfg: TrainConfig, params):
    if cfg.optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                              weight_decay=cfg.weight_decay)
    elif cfg.optimizer == "adam":
        opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    elif cfg.optimizer == "adamw":
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    else:
        raise ValueError(f"unknown optimizer {cfg.optimizer!r}; valid: sgd, adam, adamw")
    if cfg.schedule == "none":
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda e: 1.0)
    elif cfg.schedule == "step":
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, list(cfg.milestones), cfg.gamma)
    elif cfg.schedule == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(cfg.epochs, 1))
    else:
        raise ValueError(f"unknown schedule {cfg.schedule!r}; valid: none, step, cosine")
    return opt, sched


@dataclass
class TrainingParts:
    """The objects one training step uses. ``model`` is the bare student (never a DDP wrapper);
    ``tap`` is None when the loss reads no features."""
    model: nn.Module
    loss: Distiller
    tap: Optional[FeatureTap]
    optimizer: torch.optim.Optimizer
    scheduler: Any


def build_parts(cfg: TrainConfig, shape: DataShape, device: torch.device) -> TrainingParts:
    """The student, then its loss (both initialised from the torch generator, in this order),
    on ``device``; the loss checked against the data; the tap; one optimiser over every trainable
    parameter of both (a DML peer trains with the student)."""
    model = build_model(cfg.model, num_classes=shape.num_classes,
                        **model_kwargs(cfg, shape)).to(device)
    loss = build_loss(cfg.method, **loss_kwargs(cfg, shape)).to(device)
    loss.check_data(shape.num_classes, shape.in_channels, shape.input_size)
    tap = FeatureTap(model, loss.feature_layer) if loss.needs_features else None
    params = [p for p in chain(model.parameters(), loss.parameters()) if p.requires_grad]
    optimizer, scheduler = build_optimizer(cfg, params)
    return TrainingParts(model, loss, tap, optimizer, scheduler)
