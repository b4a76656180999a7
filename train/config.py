"""The one frozen training configuration, and the paper's presets.

Configuration flows one way: argparse -> :class:`TrainConfig` -> explicit function arguments.
Precedence: a flag given on the command line > the preset > the defaults below.
"""
from __future__ import annotations

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
    synth_version: int = 10               # crowd_synth generator version (its GENERATOR_VERSION; 2, 3, 5:
                                          # earlier scenes; 4, 6: opt-in)
    input_size: Optional[int] = None      # resize image folders to this square size
    patch_metres: Optional[float] = None  # ground width one training image covers (image folders)
    # real-frame validation (train/validation.py)
    val_data: Optional[str] = None        # DIR/<class>/... full frames, judged as the runtime does
    val_mode: str = "both"                # heatmap, classify or both
    val_map: Tuple[str, ...] = ()         # FOLDER=CLASS labels for other folders
    val_tile: Optional[int] = None        # heatmap camera: one of tile / gsd / altitude+hfov
    val_gsd: Optional[float] = None
    val_altitude: Optional[float] = None
    val_hfov: Optional[float] = None
    val_cameras: Optional[str] = None     # CSV: a heatmap camera per frame (edge/cameras.py)
    select_best: Optional[str] = None     # what best.pt is chosen by: test or val (None: val if val_data)
    calibrate: bool = True                # choose the decision thresholds on val_data (else: defaults)
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
    ce_reduction: str = "mean"            # CE over the batch: mean, or sum as in eq. (2)
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
    ema: Optional[float] = None           # evaluate and save an average of the weights (train/ema.py)
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
        d["val_map"] = list(self.val_map)
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
        if "val_map" in d:
            d["val_map"] = tuple(str(m) for m in d["val_map"])
        return cls(**d)

    def replace(self, **changes: Any) -> "TrainConfig":
        return replace(self, **changes)


#: what may differ between an interrupted run and its --resume without changing the result
#: (``out``: a run folder may be moved, copied, or named as ./x, x/ or an absolute path;
#: ``patch_metres``: metadata, not weights)
RESUMABLE_CHANGES = frozenset({"resume", "overwrite", "device", "eval_batch_size", "epochs", "data_root",
                               "out", "patch_metres"})

# Nesterov SGD, lr 0.1, momentum 0.9 and a step schedule: the common part of Tables 7-13. Weight
# decay is not stated in the paper; 5e-4, the value of the works it follows, is assumed.
_STEP_SGD = dict(optimizer="sgd", lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4,
                 schedule="step")

PRESETS: Dict[str, Dict[str, Any]] = {
    # POSD paper, Crowd-drone (sec. 4.3, Table 6): batch 32, SGD lr 1e-3 momentum 0.9, 100 epochs
    "crowd": dict(dataset="crowd_synth", model="crowd_fcn", batch_size=32, optimizer="sgd",
                  lr=1e-3, momentum=0.9, epochs=100),  # lambda 1e-4 is the posd default
    # lightweight nets on CIFAR-10 / SVHN / Fashion-MNIST (Tables 1-4), and ResNet-50 on
    # Tiny-ImageNet (Table 5): lr 1e-3, momentum 0.9, 100 epochs
    "lightweight": dict(batch_size=64, optimizer="sgd", lr=1e-3, momentum=0.9, epochs=100),
    # WRN-16-2 (Table 7; and its KD teacher WRN-40-2): x0.2 at 60/120/160, 200 epochs, batch 128
    "wrn": dict(_STEP_SGD, batch_size=128, epochs=200, milestones=(60, 120, 160), gamma=0.2),
    # CIFAR ResNets: ResNet-32 (Tables 8-9; and its KD teacher ResNet-110): batch 64,
    # x0.1 every 60 epochs, 200 epochs
    "resnet": dict(_STEP_SGD, batch_size=64, epochs=200, milestones=(60, 120, 180), gamma=0.1),
    # WRN-28-10 (Tables 10-11): batch 128, x0.1 every 60 epochs, 200 epochs
    "wrn_28_10": dict(_STEP_SGD, batch_size=128, epochs=200, milestones=(60, 120, 180), gamma=0.1),
    # WRN-20-8 (Tables 12-13): batch 128, /10 at 150 and 225, 300 epochs
    "wrn_20_8": dict(_STEP_SGD, batch_size=128, epochs=300, milestones=(150, 225), gamma=0.1),
    "none": {},
}

#: the paper's tables each preset reproduces (for --help and docs)
PRESET_TABLES = {"crowd": "Table 6", "lightweight": "Tables 1-5", "wrn": "Table 7",
                 "resnet": "Tables 8-9", "wrn_28_10": "Tables 10-11", "wrn_20_8": "Tables 12-13",
                 "none": "no preset: the TrainConfig defaults"}

#: the preset a model trains with when --preset is not given: the recipe of the paper's table
#: that uses the model (a KD teacher takes its student's)
MODEL_PRESETS = {
    "cifar_cnn": "lightweight", "fashion_cnn": "lightweight", "resnet50": "lightweight",
    "crowd_fcn": "crowd",
    "wrn_16_2": "wrn", "wrn_40_2": "wrn",
    "resnet20": "resnet", "resnet32": "resnet", "resnet56": "resnet", "resnet110": "resnet",
    "wrn_28_10": "wrn_28_10", "wrn_20_8": "wrn_20_8",
}


def preset_for_model(model: str) -> str:
    """The model's preset (:data:`MODEL_PRESETS`); "none" for a model the paper does not train."""
    return MODEL_PRESETS.get(model, "none")


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
