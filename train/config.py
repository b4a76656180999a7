"""The one frozen training configuration, and the paper's presets.

Configuration flows one way: argparse -> :class:`TrainConfig` -> explicit function arguments.
Precedence: a flag given on the command line > the preset > the defaults below.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Dict, Mapping, Optional, Tuple


@dataclass(frozen=True)
class TrainConfig:
    # data
    dataset: str = "crowd_synth"
    data: Optional[str] = None            # an image folder DIR/train/<class>, DIR/test/<class>
    data_root: Optional[str] = None       # where torchvision datasets / crowd_synth live
    download: bool = False
    synth_size: Optional[int] = None      # crowd_synth training images per class (paper: 7000)
    synth_seed: int = 0
    input_size: Optional[int] = None      # resize image folders to this square size
    augment: Optional[str] = None         # None: the dataset's default (train/data/augment.py)
    # model and method
    model: str = "crowd_fcn"
    model_kwargs: Mapping[str, Any] = field(default_factory=dict)
    method: str = "ce"
    knn: int = 2
    lam: Optional[float] = None           # None: the method's default
    kernel_d: float = 2.0                 # POSD power-kernel exponent d
    feature_layer: Optional[str] = None   # None: the method's default
    qmi: bool = False                     # POSD: full QMI (V_IN + V_ALL - 2 V_BTW) instead of V_IN
    teacher: Optional[str] = None         # KD: teacher checkpoint
    temperature: Optional[float] = None   # KD / DML softening temperature
    kd_alpha: Optional[float] = None
    peer_model: Optional[str] = None      # DML: the peer's architecture (default: same as model)
    # optimisation
    epochs: int = 100
    batch_size: int = 64
    optimizer: str = "sgd"
    lr: float = 1e-3
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 0.0
    schedule: str = "none"
    milestones: Tuple[int, ...] = ()
    gamma: float = 0.1
    # run
    seed: int = 0
    device: str = "auto"
    amp: bool = False
    eval_batch_size: int = 256
    out: str = "runs/default"
    resume: bool = False
    overwrite: bool = False
    preset: str = "none"
    knn_scope: str = "local"              # DDP: neighbours from the local or the gathered batch

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d["model_kwargs"] = dict(self.model_kwargs)
        d["milestones"] = list(self.milestones)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown config keys {sorted(unknown)}")
        d = dict(d)
        if "milestones" in d:
            d["milestones"] = tuple(int(m) for m in d["milestones"])
        return cls(**d)

    def replace(self, **changes: Any) -> "TrainConfig":
        return replace(self, **changes)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


#: what may differ between an interrupted run and its --resume without changing the result
RESUMABLE_CHANGES = frozenset({"resume", "overwrite", "device", "eval_batch_size", "epochs", "data_root"})

PRESETS: Dict[str, Dict[str, Any]] = {
    # POSD paper, Crowd-drone (sec. 4.3, Table 6): batch 32, SGD lr 1e-3 momentum 0.9, 100 epochs
    "crowd": dict(dataset="crowd_synth", model="crowd_fcn", batch_size=32, optimizer="sgd",
                  lr=1e-3, momentum=0.9, epochs=100),  # lambda 1e-4 is the posd default
    # lightweight nets on CIFAR-10 / SVHN / Fashion-MNIST (Tables 1-4): lr 1e-3, momentum 0.9, 100 epochs
    "lightweight": dict(batch_size=64, optimizer="sgd", lr=1e-3, momentum=0.9, epochs=100),
    # WRN / ResNet comparisons (Tables 7-13): SGD Nesterov lr 0.1, step schedule, 200 epochs
    "wrn": dict(batch_size=128, optimizer="sgd", lr=0.1, momentum=0.9, nesterov=True,
                weight_decay=5e-4, epochs=200, schedule="step", milestones=(60, 120, 160), gamma=0.2),
    "none": {},
}

MODEL_PRESETS = {"cifar_cnn": "lightweight", "fashion_cnn": "lightweight", "crowd_fcn": "crowd"}


def preset_for_model(model: str) -> str:
    if model in MODEL_PRESETS:
        return MODEL_PRESETS[model]
    if model.startswith(("resnet", "wrn_")):
        return "wrn"
    return "none"


def resolve(explicit: Mapping[str, Any], preset: Optional[str] = None) -> TrainConfig:
    """Base defaults <- preset <- explicitly given values (those not None)."""
    given = {k: v for k, v in explicit.items() if v is not None}
    model = given.get("model")
    name = preset or given.get("preset") or preset_for_model(model or TrainConfig.model)
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; valid: {', '.join(sorted(PRESETS))}")
    values: Dict[str, Any] = dict(PRESETS[name])
    values.update(given)
    values["preset"] = name
    if values.get("data"):                # an image folder replaces the preset's dataset
        values["dataset"] = "folder"
    return TrainConfig.from_dict(values)
