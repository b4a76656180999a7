"""Choose a model's decision thresholds on validation frames and store them in its checkpoint.

    python -m train.calibrate runs/crowd/model.pt --val-data val_frames/ --altitude 60 --hfov 82
    python -m train.calibrate model.pt --val-data val_frames/ --mode classify --out model_cal.pt
    python -m train.calibrate model.pt --val-data frames/ --map crowd_ground=crowd --gsd 0.05
    python -m train.calibrate model.pt --val-data frames/ --cameras frames/cameras.csv
    python -m train.calibrate runs/crowd/model.pt --background

``--val-data`` holds full frames in class folders (``DIR/<class>/...``, ``--map FOLDER=CLASS`` for
others). Each frame is judged as ``edge.run`` judges it (edge/judge.py, the camera flags as
edge.run's; ``--cameras CSV`` gives frames from several flights each a camera of its own, the file
``edge.evaluate --cameras`` reads), then the thresholds that maximise balanced accuracy are chosen,
ties to the higher crowd recall: the per-area ``threshold`` and ``min_area`` (heatmap) and
``classify_threshold`` (classify). The rule, with where it came from, goes into the checkpoint's
``decision`` (written to a temporary file and renamed: the same file, or ``--out``); thresholds of
a mode not judged keep their values, and so does the model's background (from which the heatmap
raises its tile threshold per frame; the search judges every candidate threshold that way).
Re-export afterwards (``python -m export.onnx``) so the runtime reads them. Training with
``--val-data`` does this at the end by itself.

``--background`` measures the model's background instead of (or before) choosing thresholds: its
p(crowd) over the images of its own test split that are not of class ``crowd`` (the data its
stored configuration names: crowd_synth is generated into the cache when it is not there, and
nothing is downloaded; a ``--data`` folder must still exist), the same numbers training stores
since models carry a background. A model trained before that gets the per-frame tile threshold
this way without retraining. Exit status 0, or 2 for a bad checkpoint, folder or flag (one line on
stderr, nothing written).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional

from edge.command import run_command
from edge.judge import add_camera_args, camera_from_args


def build_parser() -> argparse.ArgumentParser:
    from train.validation import VAL_MODES

    p = argparse.ArgumentParser(prog="python -m train.calibrate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="an edge-students checkpoint (model.pt / best.pt)")
    p.add_argument("--val-data", default=None, metavar="DIR", help="full frames in class folders DIR/<class>/...")
    p.add_argument("--background", action="store_true",
                   help="measure the model's background on the test split of the data it was trained "
                        "on (its stored configuration), from which the heatmap raises its tile "
                        "threshold per frame")
    p.add_argument("--mode", choices=VAL_MODES, default="both", help="which thresholds to choose (default: both)")
    p.add_argument("--map", nargs="+", action="extend", default=[], metavar="FOLDER=CLASS",
                   help="label other folders, e.g. crowd_ground=crowd")
    p.add_argument("--heatmap-impl", choices=("tiles", "dense"), default="tiles",
                   help="the heatmap path the runtime will use (dense: a --dense export)")
    p.add_argument("--out", default=None, help="write the calibrated checkpoint here (default: in place)")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    g = p.add_argument_group("camera (as edge.run)")
    add_camera_args(g)
    g.add_argument("--cameras", default=None, metavar="CSV",
                   help="heatmap: a camera per frame (columns path,gsd,altitude,hfov,tile; path "
                        "relative to --val-data); frames it does not list use the flags above")
    return p


def _fmt(metrics) -> str:
    return ", ".join(f"{m} balanced {v['balanced_accuracy']:.3f} (crowd {v['recall_positive']:.3f}, "
                     f"other {v['recall_negative']:.3f})" for m, v in metrics.items())


def calibrate_checkpoint(args):
    """(calibrated checkpoint dict, rule, metrics before, metrics after); ValueError & co."""
    from edge.cli_checks import check_not_input, check_output_file
    from train.build import pick_device
    from train.checkpoint import load_model, model_info
    from train.validation import RealValidation

    if args.val_data is None and not args.background:
        raise ValueError("give --val-data DIR (choose thresholds on frames), --background (measure "
                         "the model's background), or both")
    camera = camera_from_args(args)
    cameras = None
    if args.cameras is not None:
        from edge.cameras import read_cameras

        if args.val_data is None:
            raise ValueError("--cameras needs --val-data DIR (it names frames of that folder)")
        if args.mode == "classify":
            raise ValueError("--cameras sizes heatmap tiles; --mode classify judges whole frames "
                             "(use heatmap or both)")
        cameras = read_cameras(args.cameras, args.val_data)
    out = args.out or args.checkpoint            # checked now: the frames are judged before it is written
    check_not_input("--out" if args.out else "the checkpoint", out,
                    [("the --cameras file", args.cameras)] if args.cameras else [])
    check_output_file("--out" if args.out else "the checkpoint", out)
    device = pick_device(args.device)
    model, ckpt = load_model(args.checkpoint, map_location="cpu")
    if args.heatmap_impl == "dense" and not hasattr(model, "score_map"):
        raise ValueError(f"--heatmap-impl dense needs a fully convolutional model; {ckpt['arch']} is not one")
    info = model_info(ckpt)
    val = None
    if args.val_data is not None:
        val = RealValidation(args.val_data, info, args.mode, camera, args.map, impl=args.heatmap_impl,
                             cameras=cameras)
        if Path(out).exists():
            check_not_input("--out", out, [("the --val-data frame", im.path) for im in val.images])
        for note in val.notes:
            print(f"train.calibrate: note: {note}", file=sys.stderr)
    model = model.to(device)
    rule = info.decision
    if args.background:
        rule = rule.replace(background=measure_background(model, ckpt, device))
    if val is None:
        return dict(ckpt, decision=rule.to_dict()), rule, None, None
    result = val.run(model, device, rule)
    rule = val.calibrate(result, rule, f"python -m train.calibrate --mode {args.mode}")
    ckpt = dict(ckpt, decision=rule.to_dict())
    return ckpt, rule, result.metrics, val.rescore(result, rule)


def measure_background(model, ckpt, device, batch: int = 256):
    """The model's :class:`~edge.contract.Background` on the test split of the data its stored
    configuration names, as training measures it (p(crowd) of the test images not of class
    crowd, from float32 logits). ValueError (or DataError) when that data cannot be had."""
    import torch

    from edge.contract import MIN_BACKGROUND_PATCHES
    from train.build import load_data
    from train.config import TrainConfig
    from train.data.augment import Normalizer
    from train.engine import split_background

    names = [str(c) for c in ckpt["class_names"]]
    if "crowd" not in names:
        raise ValueError(f"--background is of the crowd class, which this model does not have "
                         f"(classes {names})")
    stored = ckpt.get("config")
    if not isinstance(stored, dict) or not (stored.get("data") or stored.get("dataset")):
        raise ValueError("--background needs the training configuration the checkpoint stores "
                         "(which data it was trained on); this checkpoint has none")
    try:
        cfg = TrainConfig.from_dict(stored)
    except (TypeError, ValueError) as e:
        raise ValueError(f"--background needs the training configuration the checkpoint stores "
                         f"({e})") from None
    data = load_data(cfg.replace(download=False))
    if list(data.class_names) != names:
        raise ValueError(f"--background: the data's classes {list(data.class_names)} are not the "
                         f"model's {names}")
    print(f"train.calibrate: measuring the background on the test split of "
          f"{cfg.data or cfg.dataset} (from the checkpoint's configuration)", file=sys.stderr)
    pos = names.index("crowd")
    pre = ckpt["preprocess"]
    normalize = Normalizer(pre["mean"], pre["std"], device)
    keep = data.test_y != pos
    scores = []
    model.eval()
    with torch.no_grad():
        for xb in data.test_x[keep].split(batch):
            logits = model(normalize(xb.to(device))).float()
            scores.append(torch.softmax(logits, 1)[:, pos].double().cpu())
    s = (torch.cat(scores) if scores else torch.zeros(0, dtype=torch.float64)).numpy()
    bg = split_background(s, data.name, "crowd")
    if bg is None:
        raise ValueError(f"--background: the test split holds {len(s)} images not of class crowd; "
                         f"a background needs at least {MIN_BACKGROUND_PATCHES}")
    return bg


def main(argv: Optional[List[str]] = None) -> int:
    from train.checkpoint import CheckpointError
    from train.data import DataError

    errors = (ValueError, FileNotFoundError, CheckpointError, DataError, RuntimeError)
    return run_command("train.calibrate", build_parser().parse_args(argv), calibrate_checkpoint,
                       save, errors)


def save(args, calibrated) -> int:
    """Write the calibrated checkpoint and say what the rule does."""
    from train.checkpoint import save_checkpoint

    ckpt, rule, before, after = calibrated
    out = Path(args.out or args.checkpoint)
    save_checkpoint(ckpt, out)
    if before is not None:
        print(f"with the rule it had: {_fmt(before)}")
        print(f"with the chosen rule: {_fmt(after)}")
    print(f"decision: threshold {rule.threshold:.3f}, min_area {rule.min_area:.4f}, "
          f"classify_threshold {rule.classify_threshold:.3f}\n  source: {rule.source}")
    if rule.background is not None:
        print(f"  heatmap tile threshold raised per frame from the background ({rule.background.source})")
    print(f"wrote {out}; re-export it (python -m export.onnx {out}) for the runtime to use the rule")
    return 0


if __name__ == "__main__":
    sys.exit(main())
