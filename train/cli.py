"""Command line of ``python -m train`` and of the presets (``python -m train.crowd_drone``).

    python -m train --dataset cifar10 --model cifar_cnn --posd --knn 4 --batch-size 64 --download
    python -m train --data /path/with/train_and_test --model crowd_fcn --oskd --knn 4
    python -m train --dataset cifar10 --model resnet32 --kd runs/resnet110/model.pt
    python -m train --dataset digits --model cifar_cnn --posd --knn 2 --epochs 20 --out runs/digits
    python -m train --out runs/digits --resume        # after Ctrl-C: same flags plus --resume

Flags left out take the preset's value (``--preset``, else the model's: lightweight nets ->
"lightweight", ResNets/WRNs -> "wrn", crowd_fcn -> "crowd"), then the defaults of
:class:`train.config.TrainConfig`. The resolved configuration is printed and saved.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Dict, Optional, Sequence

from train.config import PRESETS, TrainConfig, resolve

#: aliases: --posd is --method posd, and so on (--kd and --dml take a value)
FLAG_METHODS = ("ce", "posd", "oskd")


def build_parser(prog: str = "python -m train", preset: Optional[str] = None) -> argparse.ArgumentParser:
    from train.data import list_datasets
    from train.data.augment import POLICIES, SMALL_IMAGE_SIDE
    from train.losses import list_losses
    from train.models import list_models

    d = TrainConfig()
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = p.add_argument_group("data")
    g.add_argument("--dataset", choices=list_datasets(), default=None,
                   help=f"built-in or torchvision dataset (default: {d.dataset})")
    g.add_argument("--data", metavar="DIR", default=None,
                   help="an image folder DIR/train/<class>/*, DIR/test/<class>/* (e.g. the real Crowd-drone set)")
    g.add_argument("--data-root", metavar="DIR", default=None,
                   help="where datasets are downloaded / generated (default: ~/.cache/edge-students)")
    g.add_argument("--download", action="store_true", default=None,
                   help="download a torchvision dataset if it is not under --data-root")
    g.add_argument("--synth-size", type=int, default=None, metavar="N",
                   help="crowd_synth: training images per class (paper size 7000; test set 3:7 of it)")
    g.add_argument("--synth-seed", type=int, default=None, help="crowd_synth generator seed")
    g.add_argument("--input-size", type=int, default=None, metavar="PX",
                   help="resize image-folder data to PX x PX (default: the model's)")
    g.add_argument("--augment", choices=POLICIES, default=None,
                   help="training augmentation (docs/augmentation.md). Default: the dataset's "
                        "(cifar10, cifar100, tiny_imagenet: crop-flip; svhn, digits: crop; "
                        "fashion_mnist: none; crowd_synth: aerial-robust); for --data DIR, crop-flip when "
                        f"the training images' median shorter side is <= {SMALL_IMAGE_SIDE} px, else "
                        "aerial. config.json records the value used")

    g = p.add_argument_group("model and method")
    g.add_argument("--model", choices=list_models(), default=None, help=f"architecture (default: {d.model})")
    g.add_argument("--model-kwargs", type=json.loads, default=None, metavar="JSON",
                   help='extra architecture arguments, e.g. \'{"widths": [24, 48, 96]}\'')
    g.add_argument("--method", choices=list_losses(), default=None, help=f"training method (default: {d.method})")
    for name in FLAG_METHODS:
        g.add_argument(f"--{name}", dest="method", action="store_const", const=name,
                       help=f"alias of --method {name}")
    g.add_argument("--kd", metavar="TEACHER.pt", default=None,
                   help="offline KD from this teacher checkpoint (alias of --method kd --teacher PATH)")
    g.add_argument("--dml", action="store_true", default=None,
                   help="deep mutual learning with one peer (alias of --method dml)")
    g.add_argument("--knn", type=int, default=None, metavar="K", help=f"POSD/OSKD neighbours (default: {d.knn})")
    g.add_argument("--lambda", dest="lam", type=float, default=None,
                   help="weight of the distillation term (default: the method's; POSD 1e-4)")
    g.add_argument("--kernel-d", type=float, default=None, help=f"POSD power-kernel exponent d (default: {d.kernel_d})")
    g.add_argument("--feature-layer", default=None,
                   help="representation POSD/OSKD read: penultimate, logits, or a module name")
    g.add_argument("--qmi", action="store_true", default=None,
                   help="POSD: optimise the full QMI (V_IN + V_ALL - 2 V_BTW) instead of V_IN")
    g.add_argument("--teacher", default=None, help="KD teacher checkpoint")
    g.add_argument("--temperature", type=float, default=None, help="KD/DML temperature (KD default 4)")
    g.add_argument("--kd-alpha", type=float, default=None, help="KD weight of the soft term (default 0.9)")
    g.add_argument("--peer-model", choices=list_models(), default=None, help="DML peer (default: --model)")

    g = p.add_argument_group("optimisation")
    g.add_argument("--preset", choices=sorted(PRESETS), default=None,
                   help="the paper's settings (default: the model's preset)")
    g.add_argument("--epochs", type=int, default=None)
    g.add_argument("--batch-size", type=int, default=None)
    g.add_argument("--optimizer", choices=("sgd", "adam", "adamw"), default=None)
    g.add_argument("--lr", type=float, default=None)
    g.add_argument("--momentum", type=float, default=None)
    g.add_argument("--nesterov", action="store_true", default=None)
    g.add_argument("--weight-decay", type=float, default=None)
    g.add_argument("--schedule", choices=("none", "step", "cosine"), default=None)
    g.add_argument("--milestones", type=int, nargs="*", default=None, help="step schedule epochs")
    g.add_argument("--gamma", type=float, default=None, help="step schedule factor")

    g = p.add_argument_group("run")
    g.add_argument("--seed", type=int, default=None)
    g.add_argument("--device", default=None, help="auto, cpu or cuda[:N] (default: auto)")
    g.add_argument("--amp", action="store_true", default=None, help="mixed precision (CUDA only)")
    g.add_argument("--eval-batch-size", type=int, default=None)
    g.add_argument("--out", metavar="DIR", default=None,
                   help="output folder (default: runs/<dataset>_<model>_<method>[_kK]_s<seed>)")
    g.add_argument("--resume", action="store_true", default=None, help="continue the run in --out")
    g.add_argument("--overwrite", action="store_true", default=None, help="replace a run in --out")
    g.add_argument("--knn-scope", choices=("local", "global"), default=None,
                   help="DDP: neighbours from the local batch or the batch gathered across ranks")
    g.add_argument("--no-progress", dest="progress", action="store_false", default=None,
                   help="no progress bars (they are off anyway when stderr is not a terminal)")
    p.set_defaults(_preset=preset)
    return p


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    v: Dict[str, Any] = {k: val for k, val in vars(args).items() if not k.startswith("_")}
    v.pop("progress", None)
    teacher_alias, dml_alias = v.pop("kd"), v.pop("dml")
    if teacher_alias is not None:
        _one_method(v, "kd")
        v["method"], v["teacher"] = "kd", teacher_alias
    if dml_alias:
        _one_method(v, "dml")
        v["method"] = "dml"
    if v.get("method") == "kd" and not v.get("teacher"):
        raise ValueError("--method kd needs a teacher: --kd TEACHER.pt or --teacher TEACHER.pt")
    if v.get("milestones") is not None:
        v["milestones"] = tuple(v["milestones"])
    if v.get("model_kwargs") is not None and not isinstance(v["model_kwargs"], dict):
        raise ValueError("--model-kwargs must be a JSON object")
    cfg = resolve(v, preset=args._preset if v.get("preset") is None else None)
    if v.get("out") is None:
        data = cfg.dataset if not cfg.data else "folder"
        knn = f"_k{cfg.knn}" if cfg.method in ("posd", "oskd") else ""
        cfg = cfg.replace(out=f"runs/{data}_{cfg.model}_{cfg.method}{knn}_s{cfg.seed}")
    _validate(cfg)
    return cfg


def _one_method(v: Dict[str, Any], name: str) -> None:
    if v.get("method") not in (None, name):
        raise ValueError(f"--{name} conflicts with --method {v['method']}")


def _validate(cfg: TrainConfig) -> None:
    for name in ("epochs", "batch_size", "eval_batch_size"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(cfg, name)}")
    if cfg.knn < 1:
        raise ValueError(f"--knn must be >= 1, got {cfg.knn}")
    if cfg.lr <= 0:
        raise ValueError(f"--lr must be > 0, got {cfg.lr}")
    if cfg.synth_size is not None and cfg.synth_size < 1:
        raise ValueError(f"--synth-size must be >= 1, got {cfg.synth_size}")


def main(argv: Optional[Sequence[str]] = None, prog: str = "python -m train",
         preset: Optional[str] = None) -> int:
    from train.checkpoint import CheckpointError
    from train.data import DataError
    from train.engine import NonFiniteLoss, RunExists, Trainer

    parser = build_parser(prog, preset)
    args = parser.parse_args(argv)
    try:
        cfg = config_from_args(args)
        print(f"{prog}: {cfg.method} {cfg.model} on {cfg.data or cfg.dataset} -> {cfg.out} "
              f"(preset {cfg.preset}, {cfg.epochs} epochs, batch {cfg.batch_size}, lr {cfg.lr})",
              flush=True)
        summary = Trainer(cfg, progress=args.progress).fit()
    except KeyboardInterrupt:
        return 130
    except (ValueError, FileNotFoundError, DataError, CheckpointError, RunExists, NonFiniteLoss) as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    print(f"done: best test accuracy {summary['best_test_acc']:.4f} (epoch {summary['best_epoch']}), "
          f"final {summary['final_test_acc']:.4f}, {summary['wall_time_s']:.0f}s -> {cfg.out}")
    return 0
