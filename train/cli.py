"""Command line of ``python -m train`` and of the presets (``python -m train.crowd_drone``).

    python -m train --dataset cifar10 --model cifar_cnn --posd --knn 4 --batch-size 64 --download
    python -m train --data /path/with/train_and_test --model crowd_fcn --oskd --knn 4
    python -m train --dataset cifar10 --model resnet32 --kd runs/resnet110/model.pt
    python -m train --dataset digits --model cifar_cnn --posd --knn 2 --epochs 20 --out runs/digits
    python -m train --out runs/digits --resume        # after Ctrl-C: same flags plus --resume

Flags left out take the preset's value (``--preset``, else the model's: the recipe of the
paper's table that trains it, :data:`train.config.MODEL_PRESETS`: lightweight nets ->
"lightweight", crowd_fcn -> "crowd", WRN-16-2 -> "wrn", CIFAR ResNets -> "resnet", ...), then the
defaults of :class:`train.config.TrainConfig`. The resolved configuration, with the preset's
name, is printed and saved in config.json.
"""
from __future__ import annotations

import argparse
from typing import Any, Dict, Optional, Sequence

from edge.cli_checks import OneLineParser, fail
from train.config import PRESET_TABLES, PRESETS, TrainConfig, resolve
from train.cli_checks import (check_input_dir, check_output_dir, check_train_config, describe_os_error,
                              json_object)


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``(default: X)`` after an option's help, except where the help already says its default or
    the parser's default is ``None`` (the option is unset: the preset or the dataset decides, as
    its help says), so that ``--help`` never reads "(default: crowd_synth) (default: None)"."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default is None or "default" in text:
            return text
        return super()._get_help_string(action)


#: aliases: --posd is --method posd, and so on (--kd and --dml take a value)
FLAG_METHODS = ("ce", "posd", "oskd")


def build_parser(prog: str = "python -m train", preset: Optional[str] = None,
                 defaults: Optional[Dict[str, Any]] = None) -> argparse.ArgumentParser:
    from train.data import list_datasets
    from edge.judge import add_camera_args
    from train.data.augment import POLICIES, SMALL_IMAGE_SIDE
    from train.losses import list_losses
    from train.models import list_models
    from train.validation import VAL_MODES

    from train.data.crowd_synth.layout import VERSIONS as SYNTH_VERSIONS

    d = TrainConfig()
    p = OneLineParser(prog=prog, description=__doc__.split("\n\n")[0],
                      formatter_class=DefaultsHelpFormatter)
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
    g.add_argument("--synth-version", type=int, default=None, choices=SYNTH_VERSIONS,
                   help=f"crowd_synth generator version (default {d.synth_version}: v5's photograph textures and "
                        "wider views through a lighter camera, trained with --augment aerial-mosaic unless --augment "
                        "says otherwise; 2, 3 and 5 reproduce earlier results (with aerial); 4 (wide views) and 6 "
                        "(every crowd on open ground) are opt-in variants; docs/crowd_synth.md)")
    g.add_argument("--input-size", type=int, default=None, metavar="PX",
                   help="resize image-folder data to PX x PX (default: the model's)")
    g.add_argument("--patch-metres", type=float, default=None, metavar="M",
                   help="ground width in metres one training image covers, recorded in the model so "
                        "the runtime can tile camera frames at that scale (built-in crowd_synth "
                        "records its own; image folders have none unless given)")
    g.add_argument("--augment", choices=POLICIES, default=None,
                   help="training augmentation (docs/augmentation.md). Default: the dataset's "
                        "(cifar10, cifar100, tiny_imagenet: crop-flip; svhn, digits: crop; "
                        "fashion_mnist: none; crowd_synth: aerial); for --data DIR, crop-flip when "
                        f"the training images' median shorter side is <= {SMALL_IMAGE_SIDE} px, else "
                        "aerial. config.json records the value used")

    g = p.add_argument_group("model and method")
    g.add_argument("--model", choices=list_models(), default=None, help=f"architecture (default: {d.model})")
    g.add_argument("--model-kwargs", type=json_object, default=None, metavar="JSON",
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
    g.add_argument("--ce-reduction", choices=("mean", "sum"), default=None,
                   help="cross-entropy over the batch: mean (default) or sum, as eq. (2) of the POSD "
                        "paper writes it; with a distillation term, sum weighs lambda N times less "
                        "(ce, posd, oskd)")
    g.add_argument("--teacher", default=None, help="KD teacher checkpoint")
    g.add_argument("--temperature", type=float, default=None, help="KD/DML temperature (KD default 4)")
    g.add_argument("--kd-alpha", type=float, default=None, help="KD weight of the soft term (default 0.9)")
    g.add_argument("--peer-model", choices=list_models(), default=None, help="DML peer (default: --model)")

    g = p.add_argument_group("optimisation")
    g.add_argument("--preset", choices=sorted(PRESETS), default=None,
                   help="the paper's settings: " + "; ".join(
                       f"{k} ({v})" for k, v in sorted(PRESET_TABLES.items()))
                   + " (default: the model's preset)")
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
    g.add_argument("--ema", type=float, default=None, metavar="DECAY",
                   help="keep an exponential moving average of the weights (decay per optimiser step, "
                        "e.g. 0.9998; 0: off) and evaluate, select and save it: test accuracy, --val-data, "
                        "best.pt and model.pt are the averaged weights; training itself is unchanged "
                        "(train/ema.py)")

    g = p.add_argument_group("real-data validation (docs/jetson.md, \"Validation frames\")")
    g.add_argument("--val-data", metavar="DIR", default=None,
                   help="full frames of any size in class folders DIR/<class>/..., judged each epoch "
                        "as edge.run judges a frame; the decision rule is calibrated on them at the end")
    g.add_argument("--val-mode", choices=VAL_MODES, default=None,
                   help=f"runtime mode(s) to judge the frames in (default: {d.val_mode})")
    g.add_argument("--val-map", nargs="+", action="extend", default=None, metavar="FOLDER=CLASS",
                   help="label other folders of --val-data, e.g. crowd_ground=crowd")
    add_camera_args(g, prefix="val-")
    g.add_argument("--val-cameras", metavar="CSV", default=None,
                   help="heatmap: a camera per frame (columns path,gsd,altitude,hfov,tile; path "
                        "relative to --val-data); frames it does not list use the --val- camera flags")
    g.add_argument("--no-calibrate", dest="calibrate", action="store_false", default=None,
                   help="with --val-data: only log the validation frames; keep the default decision "
                        "thresholds instead of choosing them on those frames")
    g.add_argument("--select-best", choices=("test", "val"), default=None,
                   help="best.pt is the epoch with the best test accuracy or the best validation "
                        "balanced accuracy (default: val with --val-data, else test)")

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
    p.set_defaults(_preset=preset, **(defaults or {}))   # a command's own defaults (train.crowd_drone)
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
    if v.get("val_map") is not None:
        v["val_map"] = tuple(v["val_map"])
    if v.get("model_kwargs") is not None and not isinstance(v["model_kwargs"], dict):
        raise ValueError("--model-kwargs must be a JSON object")
    cfg = resolve(v, preset=args._preset if v.get("preset") is None else None)
    if v.get("out") is None:
        data = cfg.dataset if not cfg.data else "folder"
        knn = f"_k{cfg.knn}" if cfg.method in ("posd", "oskd") else ""
        cfg = cfg.replace(out=f"runs/{data}_{cfg.model}_{cfg.method}{knn}_s{cfg.seed}")
    _validate(cfg)
    if cfg.ema == 0:                # off is recorded as never set, so a run from before --ema resumes
        cfg = cfg.replace(ema=None)
    return cfg


def _one_method(v: Dict[str, Any], name: str) -> None:
    if v.get("method") not in (None, name):
        raise ValueError(f"--{name} conflicts with --method {v['method']}")


def _validate(cfg: TrainConfig) -> None:
    check_train_config(cfg)
    if cfg.ema is not None:
        from train.ema import check_decay

        check_decay(cfg.ema)
    if cfg.patch_metres is not None and not (0 < cfg.patch_metres < float("inf")):
        raise ValueError(f"--patch-metres must be a positive number of metres, got {cfg.patch_metres}")
    _validate_val(cfg)


def _check_paths(cfg: TrainConfig) -> None:
    """Before any data is loaded or generated: the folders the run writes can be written."""
    if not str(cfg.out).strip():
        raise ValueError("--out is empty; give the run's folder")
    check_output_dir(cfg.out, "--out")
    if cfg.data_root is not None:
        check_input_dir(cfg.data_root, "--data-root")
    if cfg.data is not None:
        check_input_dir(cfg.data, "--data")


def _validate_val(cfg: TrainConfig) -> None:
    """The validation flags, before any data is loaded or generated."""
    from pathlib import Path

    from edge.judge import Camera

    if cfg.select_best not in (None, "test", "val"):
        raise ValueError(f"--select-best must be test or val, got {cfg.select_best!r}")
    if cfg.select_best == "val" and not cfg.val_data:
        raise ValueError("--select-best val needs --val-data DIR")
    if cfg.val_data and not Path(cfg.val_data).is_dir():
        raise ValueError(f"--val-data {cfg.val_data}: folder not found")
    try:
        Camera(cfg.val_tile, cfg.val_gsd, cfg.val_altitude, cfg.val_hfov)
    except ValueError as e:                  # the message names the runtime's flags
        raise ValueError(str(e).replace("--", "--val-")) from None
    if cfg.val_cameras is not None:
        if not cfg.val_data:
            raise ValueError("--val-cameras needs --val-data DIR (it names frames of that folder)")
        if cfg.val_mode == "classify":
            raise ValueError("--val-cameras sizes heatmap tiles; --val-mode classify judges whole "
                             "frames (use heatmap or both)")
        from edge.cameras import read_cameras

        read_cameras(cfg.val_cameras, cfg.val_data)           # every line checked before training


def main(argv: Optional[Sequence[str]] = None, prog: str = "python -m train",
         preset: Optional[str] = None, defaults: Optional[Dict[str, Any]] = None) -> int:
    from train.checkpoint import CheckpointError
    from train.data import DataError
    from train.engine import NonFiniteLoss, Trainer
    from train.rundir import RunExists

    parser = build_parser(prog, preset, defaults)
    args = parser.parse_args(argv)
    try:
        cfg = config_from_args(args)
        _check_paths(cfg)
        print(f"{prog}: {cfg.method} {cfg.model} on {cfg.data or cfg.dataset} -> {cfg.out} "
              f"(preset {cfg.preset}, {cfg.epochs} epochs, batch {cfg.batch_size}, lr {cfg.lr})",
              flush=True)
        summary = Trainer(cfg, progress=args.progress).fit()
    except KeyboardInterrupt:
        return 130
    except (ValueError, DataError, CheckpointError, RunExists, NonFiniteLoss) as e:
        return fail(prog, str(e))
    except OSError as e:               # a full disk, a folder that cannot be written
        return fail(prog, describe_os_error(e))
    print(f"done: best test accuracy {summary['best_test_acc']:.4f} (epoch {summary['best_epoch']}), "
          f"final {summary['final_test_acc']:.4f}, {summary['wall_time_s']:.0f}s -> {cfg.out}")
    for term, r in (summary.get("grad_ratio") or {}).items():
        print(f"  |grad {term}| / |grad ce|: {r['first']:.2g} (epoch 1) -> {r['last']:.2g} "
              f"(last epoch), range {r['min']:.2g}-{r['max']:.2g}")
    return 0
